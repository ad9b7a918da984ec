"""Alert lifecycle against the real database: transitions, audit trail, tenants, listing."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from operators.records import DeviceCommand
from storage.alerts import (
    acknowledge,
    can_transition,
    escalate_due,
    get_alert,
    list_alerts,
    mark_false_alarm,
    resolve,
)
from storage.errors import AlertTransitionError, NotFound
from storage.writer import BatchWriter
from tests.notifier.support import alarm, migrated_scratch, reset

# Later than the database's now() that stamps the 'opened' entry, second-exact for the payload.
_MESSAGE_IDS = itertools.count()
AT = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)


@pytest.fixture(scope="module")
def shared_db(postgres: str) -> Iterator[str]:
    yield from migrated_scratch(postgres)


@pytest.fixture
def db(shared_db: str) -> str:
    return reset(shared_db)


def open_alert(db: str, source: str = "pb-1", alert_type: str = "panic", tenant_id: int = 1,
               severity: str = "critical") -> int:  # fmt: skip
    item = alarm(next(_MESSAGE_IDS), source, alert_type, severity, tenant_id)
    result = BatchWriter(db).write([item])
    return result.alerts[0].alert_id


@pytest.mark.parametrize(
    ("from_status", "to_status", "allowed"),
    [
        ("new", "acknowledged", True),
        ("new", "resolved", True),
        ("new", "false_alarm", True),
        ("acknowledged", "resolved", True),
        ("acknowledged", "false_alarm", True),
        ("acknowledged", "acknowledged", False),
        ("acknowledged", "new", False),
        ("resolved", "acknowledged", False),
        ("resolved", "false_alarm", False),
        ("false_alarm", "resolved", False),
    ],
)
def test_transition_table(from_status: str, to_status: str, allowed: bool) -> None:
    assert can_transition(from_status, to_status) is allowed


def test_acknowledge_records_who_and_when_and_returns_the_device_command(db: str) -> None:
    alert_id = open_alert(db)
    with psycopg.connect(db, autocommit=True) as conn:
        result = acknowledge(conn, 1, alert_id, "alice", note="on my way", now=AT)
        detail = get_alert(conn, 1, alert_id)
    assert result.alert.status == "acknowledged"
    assert (result.alert.acknowledged_by, result.alert.acknowledged_at) == ("alice", AT)
    assert result.command == DeviceCommand(
        "pb-1",
        {"type": "alert_ack", "alert_id": alert_id, "alert_type": "panic", "by": "alice",
         "at": AT.isoformat()},
    )  # fmt: skip
    history = [(h.action, h.actor, h.from_status, h.to_status, h.note) for h in detail.history]
    assert history == [
        ("opened", "system", None, "new", ""),
        ("acknowledged", "alice", "new", "acknowledged", "on my way"),
    ]
    assert detail.history[-1].ts == AT


def test_full_lifecycle_then_a_repeat_opens_a_new_alert(db: str) -> None:
    alert_id = open_alert(db)
    with psycopg.connect(db, autocommit=True) as conn:
        acknowledge(conn, 1, alert_id, "alice", now=AT)
        closed = resolve(conn, 1, alert_id, "bob", "guard confirmed", now=AT + timedelta(minutes=3))
        assert closed.command is None
        assert (closed.alert.status, closed.alert.closed_by) == ("resolved", "bob")
        assert closed.alert.closed_at == AT + timedelta(minutes=3)
        assert closed.alert.acknowledged_by == "alice"  # kept
        with pytest.raises(AlertTransitionError, match="is resolved; it cannot become"):
            acknowledge(conn, 1, alert_id, "carol")
        with pytest.raises(AlertTransitionError):
            mark_false_alarm(conn, 1, alert_id, "carol")
        actions = [h.action for h in get_alert(conn, 1, alert_id).history]
    assert actions == ["opened", "acknowledged", "resolved"]
    assert open_alert(db) != alert_id  # the closed alert no longer absorbs repeats


@pytest.mark.parametrize("close", [resolve, mark_false_alarm])
def test_new_alert_can_be_closed_directly(db: str, close: object) -> None:
    alert_id = open_alert(db)
    with psycopg.connect(db, autocommit=True) as conn:
        result = close(conn, 1, alert_id, "alice", now=AT)  # type: ignore[operator]
    assert result.alert.status in ("resolved", "false_alarm")
    assert result.alert.acknowledged_by is None
    assert result.alert.closed_by == "alice"


def test_acknowledging_twice_is_illegal(db: str) -> None:
    alert_id = open_alert(db)
    with psycopg.connect(db, autocommit=True) as conn:
        acknowledge(conn, 1, alert_id, "alice")
        with pytest.raises(AlertTransitionError, match="is acknowledged"):
            acknowledge(conn, 1, alert_id, "bob")
        assert [h.actor for h in get_alert(conn, 1, alert_id).history] == ["system", "alice"]


def test_another_tenants_alert_is_not_found(db: str) -> None:
    alert_id = open_alert(db, tenant_id=2)
    with psycopg.connect(db, autocommit=True) as conn:
        for operation in (acknowledge, resolve, mark_false_alarm):
            with pytest.raises(NotFound):
                operation(conn, 1, alert_id, "mallory")
        with pytest.raises(NotFound):
            get_alert(conn, 1, alert_id)
        with pytest.raises(NotFound):
            acknowledge(conn, 1, 999_999, "alice")
        assert get_alert(conn, 2, alert_id).alert.status == "new"
        assert list_alerts(conn, 1) == []


def test_alert_without_device_gives_no_command(db: str) -> None:
    alert_id = open_alert(db)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE alerts SET device_id = NULL WHERE alert_id = %s", (alert_id,))
        assert acknowledge(conn, 1, alert_id, "alice").command is None


def test_actor_is_required(db: str) -> None:
    alert_id = open_alert(db)
    with psycopg.connect(db, autocommit=True) as conn, pytest.raises(ValueError, match="actor"):
        acknowledge(conn, 1, alert_id, "  ")


def test_concurrent_acknowledgements_one_wins(db: str) -> None:
    alert_id = open_alert(db)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def ack(who: str) -> None:
        with psycopg.connect(db, autocommit=True) as conn:
            barrier.wait()
            try:
                acknowledge(conn, 1, alert_id, who)
                outcomes.append("ok")
            except AlertTransitionError:
                outcomes.append("refused")

    threads = [threading.Thread(target=ack, args=(f"op-{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["refused"] * 5
    with psycopg.connect(db, autocommit=True) as conn:
        history = get_alert(conn, 1, alert_id).history
    assert [h.action for h in history].count("acknowledged") == 1


def test_list_filters_and_pages(db: str) -> None:
    ids = [
        open_alert(db, source=f"s-{i}", severity=("critical", "medium")[i % 2]) for i in range(7)
    ]
    with psycopg.connect(db, autocommit=True) as conn:
        acknowledge(conn, 1, ids[0], "alice")
        resolve(conn, 1, ids[1], "alice")
        newest = list_alerts(conn, 1, limit=3)
        assert [a.alert_id for a in newest] == ids[::-1][:3]
        page2 = list_alerts(conn, 1, limit=3, before_id=newest[-1].alert_id)
        assert [a.alert_id for a in page2] == ids[::-1][3:6]
        assert [a.alert_id for a in list_alerts(conn, 1, status="resolved")] == [ids[1]]
        assert [a.alert_id for a in list_alerts(conn, 1, status="acknowledged")] == [ids[0]]
        assert len(list_alerts(conn, 1, status="open")) == 6
        medium = list_alerts(conn, 1, severity="medium", status="open")
        assert [a.alert_id for a in medium] == [ids[5], ids[3]]  # ids[1] is resolved
        for bad in ({"status": "closed"}, {"severity": "urgent"}, {"limit": 0}):
            with pytest.raises(ValueError):
                list_alerts(conn, 1, **bad)  # type: ignore[arg-type]


def test_escalation_stops_once_acknowledged(db: str) -> None:
    alert_id = open_alert(db)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO recipients (tenant_id, name, channel, apprise_url, tier)"
            " VALUES (1, 'boss', 'email', 'json://127.0.0.1:9/x', 2)"
        )
        acknowledge(conn, 1, alert_id, "alice")
        later = datetime.now(UTC) + timedelta(hours=1)
        assert escalate_due(conn, later, timedelta(minutes=5)) == []
