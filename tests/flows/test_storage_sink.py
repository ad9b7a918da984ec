"""The storage sink: lane routing (pure), then the two lanes against the real TimescaleDB.

What the flow relies on: every item is stored once and its AckToken is reported committed
only after its transaction committed; alert changes (urgent lane) are committed before
``write_batch`` returns, bulk rows by ``close()`` at the latest; the bulk queue blocks the
worker when full; a failure of the bulk thread stops the worker and acknowledges nothing.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from flows.acks import AckLedger, ledger_for
from flows.envelope import Envelope
from flows.storage_sink import (
    StorageSink,
    _BackgroundLane,
    _Lane,
    _StoragePartition,
    split_lanes,
)
from operators.decode import decode
from operators.records import (
    AlertCandidate,
    AlertResolution,
    DeadLetter,
    DerivedAlerts,
    DeviceAlert,
    DeviceCommand,
    Enriched,
    Position,
    Stored,
    SystemHealth,
    Telemetry,
    changes_alerts,
)
from storage.writer import BatchWriter
from tests.integration.harness import wait_until

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
WAIT_S = 10.0


def at(i: int) -> datetime:
    return T0 + timedelta(seconds=i)


def telemetry(i: int, device: str = "d-1") -> Enriched:
    rec = Telemetry(device, at(i), 80.0, -60.0, 25.0, f"m-{i}", T0)
    return Enriched(rec, tenant_id=1, device_id=device)


def position(i: int) -> Enriched:
    rec = Position(7, at(i), 12.97, 77.59, 5.0, 1, f"g-{i}", T0)
    return Enriched(rec, tenant_id=1, site_id=1, guard_id=7, device_id="gd-7")


def panic(i: int, source: str = "pb-1") -> Enriched:
    rec = DeviceAlert(source, "panic", at(i), "critical", "Panic", 12.97, 77.59, f"p-{i}", T0)
    item = Enriched(rec, tenant_id=1, device_id=source)
    item.alerts.append(AlertCandidate(1, source, "panic", "critical", "Panic", at(i)))
    return item


def resolving(i: int) -> Enriched:
    item = telemetry(i)
    item.resolutions.append(AlertResolution(1, "d-1", "device_offline", at(i), "back"))
    return item


def commanding(i: int) -> Enriched:
    item = telemetry(i)
    item.commands.append(DeviceCommand("d-1", {"buzz": True}))
    return item


def letter(i: int) -> DeadLetter:
    item = decode("device/d-1/telemetry", f'{{"battery": {500 + i}}}'.encode(), at(i))
    assert isinstance(item, DeadLetter)
    return item


def offline(i: int) -> DerivedAlerts:
    alert = AlertCandidate(1, "d-9", "device_offline", "high", "silent", at(i))
    return DerivedAlerts(1, alerts=[alert])


def unstorable(i: int) -> Enriched:
    """A health report whose payload cannot be encoded: the writer raises TypeError, which is
    not a database error (no retry, no dead letter: the lane fails)."""
    rec = SystemHealth("noc", at(i), {"cores": {1, 2}}, f"h-{i}", T0)
    return Enriched(rec, tenant_id=0)


def envelope(item: Stored, ledger: AckLedger | None = None, mid: int = 0) -> Envelope:
    token = ledger.received(mid) if ledger is not None else None
    return Envelope("device/d-1/telemetry", b"{}", token, item)


def new_ledger() -> AckLedger:
    return ledger_for(f"sink-test-{uuid.uuid4().hex[:8]}")


def ackable(ledger: AckLedger) -> list[int]:
    return ledger.take_ackable()[1]


# --- routing (pure) -----------------------------------------------------------------------

ITEMS: dict[str, Callable[[int], Stored]] = {
    "derived alerts": offline,
    "derived, empty": lambda i: DerivedAlerts(1),
    "enriched with an alert": panic,
    "enriched with a resolution": resolving,
    "enriched with a command": commanding,
    "plain telemetry": telemetry,
    "plain position": position,
    "device alert without candidates": lambda i: Enriched(panic(i).record, tenant_id=1),
    "dead letter": letter,
}


@pytest.mark.parametrize(
    ("kind", "urgent"),
    [
        ("derived alerts", True),
        ("derived, empty", True),
        ("enriched with an alert", True),
        ("enriched with a resolution", True),
        ("enriched with a command", True),
        ("plain telemetry", False),
        ("plain position", False),
        ("device alert without candidates", False),
        ("dead letter", False),
    ],
)
def test_is_urgent(kind: str, urgent: bool) -> None:
    assert changes_alerts(ITEMS[kind](1)) is urgent


@pytest.mark.parametrize(
    "kinds",
    [
        [],
        ["plain telemetry", "dead letter", "plain position"],
        ["enriched with an alert", "derived alerts"],
        ["plain telemetry", "enriched with an alert", "dead letter", "derived alerts",
         "plain telemetry", "enriched with a command", "enriched with a resolution"],
    ],
)  # fmt: skip
def test_split_lanes_keeps_the_order_within_each_lane(kinds: list[str]) -> None:
    envelopes = [envelope(ITEMS[kind](i)) for i, kind in enumerate(kinds)]
    urgent, bulk = split_lanes(envelopes)
    assert [id(e) for e in urgent] == [id(e) for e in envelopes if changes_alerts(e.stored_item)]
    assert [id(e) for e in bulk] == [id(e) for e in envelopes if not changes_alerts(e.stored_item)]
    assert len(urgent) + len(bulk) == len(envelopes)


# --- against the database -----------------------------------------------------------------


@pytest.fixture
def db(migrated_db: str) -> str:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme')")
    return migrated_db


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def writer_waits_on_a_lock(url: str, application_name: str) -> bool:
    found = rows(
        url,
        "SELECT wait_event_type FROM pg_stat_activity WHERE datname = current_database()"
        f" AND application_name = '{application_name}'",
    )
    return found == [("Lock",)]


class Call:
    """A call run in a thread of its own, so a test can tell whether (and how) it returned."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._fn = fn
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def returned(self, timeout: float) -> bool:
        if not self.done.wait(timeout):
            return False
        if self.error is not None:
            raise self.error
        return True


@pytest.mark.integration
def test_a_mixed_batch_is_stored_once_and_every_token_committed(db: str) -> None:
    ledger = new_ledger()
    items: list[Stored] = [
        telemetry(0), telemetry(1), panic(2), letter(3), telemetry(4), position(5),
        telemetry(6), letter(7), telemetry(8),
    ]  # fmt: skip
    envelopes = [envelope(item, ledger, 100 + i) for i, item in enumerate(items)]
    envelopes.insert(5, envelope(offline(5)))  # derived: no token
    part = StorageSink(db, max_backoff_s=0.2).build("store", 0, 1)
    try:
        part.write_batch(envelopes[:4])
        part.write_batch(envelopes[4:])
    finally:
        part.close()

    assert rows(db, "SELECT count(*), count(DISTINCT msg_id) FROM telemetry") == [(5, 5)]
    assert rows(db, "SELECT count(*) FROM positions") == [(1,)]
    assert rows(db, "SELECT source_id, msg_id FROM device_alerts") == [("pb-1", "p-2")]
    assert rows(db, "SELECT reason, count(*) FROM dead_letters GROUP BY 1") == [
        ("invalid_field", 2)
    ]
    assert rows(
        db, "SELECT source_id, alert_type, severity, status, count FROM alerts ORDER BY 1"
    ) == [("d-9", "device_offline", "high", "new", 1), ("pb-1", "panic", "critical", "new", 1)]
    assert ackable(ledger) == [100 + i for i in range(len(items))]


@pytest.mark.integration
def test_urgent_items_commit_before_write_batch_returns_bulk_items_by_close(db: str) -> None:
    urgent, bulk = new_ledger(), new_ledger()
    envelopes = [
        envelope(telemetry(0), bulk, 1),
        envelope(panic(1), urgent, 1),
        envelope(letter(2), bulk, 2),
        envelope(panic(3, "pb-2"), urgent, 2),
        envelope(telemetry(4), bulk, 3),
    ]
    part = StorageSink(db, max_backoff_s=0.2).build("store", 0, 1)
    try:
        with psycopg.connect(db) as locker:  # telemetry locked: bulk rows cannot commit
            locker.execute("LOCK TABLE telemetry IN ACCESS EXCLUSIVE MODE")
            call = Call(lambda: part.write_batch(envelopes))
            assert call.returned(WAIT_S), "write_batch waited for the bulk lane"
            assert ackable(urgent) == [1, 2]
            assert rows(db, "SELECT source_id FROM alerts ORDER BY 1") == [("pb-1",), ("pb-2",)]
            wait_until(
                lambda: writer_waits_on_a_lock(db, "noc-ingest-0"), WAIT_S, "the bulk writer"
            )
            assert ackable(bulk) == []
            locker.rollback()
    finally:
        part.close()
    assert ackable(bulk) == [1, 2, 3]
    assert rows(db, "SELECT count(*) FROM telemetry") == [(2,)]
    assert rows(db, "SELECT count(*) FROM dead_letters") == [(1,)]


@pytest.mark.integration
def test_put_blocks_while_max_rows_are_queued(db: str) -> None:
    ledger = new_ledger()
    first = [envelope(telemetry(0), ledger, 1), envelope(telemetry(1), ledger, 2)]
    second = [envelope(telemetry(2), ledger, 3)]
    part = StorageSink(db, max_backoff_s=0.2, bulk_max_rows=2).build("store", 0, 1)
    try:
        with psycopg.connect(db) as locker:
            locker.execute("LOCK TABLE telemetry IN ACCESS EXCLUSIVE MODE")
            assert Call(lambda: part.write_batch(first)).returned(WAIT_S)  # the queue was empty
            wait_until(
                lambda: writer_waits_on_a_lock(db, "noc-ingest-0"), WAIT_S, "the bulk writer"
            )
            blocked = Call(lambda: part.write_batch(second))
            assert not blocked.returned(0.5), "put returned with max_rows queued"
            assert ackable(ledger) == []
            locker.rollback()
            assert blocked.returned(WAIT_S), "put still blocked after the writer got through"
    finally:
        part.close()
    assert ackable(ledger) == [1, 2, 3]
    assert rows(db, "SELECT count(*) FROM telemetry") == [(3,)]


def lane_failed(lane: _BackgroundLane) -> bool:
    try:
        lane.check()
    except RuntimeError:
        return True
    return False


SURFACES: dict[str, Callable[[_StoragePartition, _BackgroundLane, list[Envelope]], None]] = {
    "write_batch": lambda part, lane, later: part.write_batch(later),
    "write_batch, urgent only": lambda part, lane, later: part.write_batch(later[:1]),
    "check": lambda part, lane, later: lane.check(),
    "drain": lambda part, lane, later: lane.drain(),
    "put": lambda part, lane, later: lane.put(later[1:]),
    "close": lambda part, lane, later: part.close(),
}


@pytest.mark.integration
@pytest.mark.parametrize("surface", list(SURFACES))
def test_a_failure_of_the_bulk_thread_surfaces_and_acknowledges_nothing(
    db: str, surface: str
) -> None:
    ledger = new_ledger()
    failing = [
        envelope(telemetry(0), ledger, 1),
        envelope(unstorable(1), ledger, 2),
        envelope(telemetry(2), ledger, 3),
    ]
    later = [envelope(panic(3), ledger, 4), envelope(telemetry(4), ledger, 5)]
    lane = _BackgroundLane(_Lane("bulk", BatchWriter(db, "sink-test-bulk"), None, 0.2), 100)
    urgent = _Lane("urgent", BatchWriter(db, "sink-test-urgent"), None, 0.2)
    part = _StoragePartition(urgent, lane, None)
    try:
        part.write_batch(failing)
        wait_until(lambda: lane_failed(lane), WAIT_S, "the bulk lane to fail", step=0.02)
        with pytest.raises(RuntimeError, match="bulk storage lane failed") as raised:
            SURFACES[surface](part, lane, later)
        assert isinstance(raised.value.__cause__, TypeError)
    finally:
        with suppress(RuntimeError):
            part.close()
    assert ackable(ledger) == []
    # Nothing of the failed batch, and nothing offered after the failure, was stored.
    for table in ("telemetry", "system_health", "device_alerts", "alerts"):
        assert rows(db, f"SELECT count(*) FROM {table}") == [(0,)], table
