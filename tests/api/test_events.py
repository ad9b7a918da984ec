"""storage.events against the real database: commit-ordered ids, NOTIFY only on commit,
no events for redelivered messages, retention with a watermark."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from operators.records import AlertCandidate, DeviceAlert, Enriched, Position
from storage import events
from storage.writer import BatchWriter

T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


@pytest.fixture
def db(migrated_db: str) -> str:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme')")
    return migrated_db


def rows(db: str) -> list[tuple[int, str]]:
    with psycopg.connect(db) as conn:
        return [
            (int(r[0]), str(r[1]))
            for r in conn.execute("SELECT event_id, type FROM ws_events ORDER BY event_id")
        ]


def panic(i: int, source: str = "pb-1") -> Enriched:
    ts = T0 + timedelta(seconds=i)
    item = Enriched(
        DeviceAlert(source, "panic", ts, "critical", "p", None, None, f"m{i}", T0),
        tenant_id=1,
        device_id=source,
    )
    item.alerts.append(AlertCandidate(1, source, "panic", "critical", f"p{i}", ts))
    return item


def test_batch_events_once_even_when_redelivered(db: str) -> None:
    writer = BatchWriter(db)
    fixes = [
        Enriched(Position(7, T0 + timedelta(seconds=s), 1.0, 2.0, 3.0, None, f"g{s}", T0), 1)
        for s in range(3)
    ]
    batch = [panic(1), panic(2, "pb-2"), *fixes]
    writer.write(batch)
    writer.write(batch)  # redelivered: nothing new, so no event
    writer.write([panic(3)])  # folded into pb-1's open alert
    writer.close()
    assert [t for _, t in rows(db)] == ["alert", "alert", "position", "alert_update"]


def test_notify_is_delivered_only_on_commit(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as listener:
        listener.execute(f"LISTEN {events.CHANNEL}")
        with psycopg.connect(db) as conn:
            with conn.cursor() as cur:
                events.append_events(cur, [events.NewEvent(1, "zone", {"n": 1})])
            assert list(listener.notifies(timeout=0.3)) == []
            conn.rollback()
            assert list(listener.notifies(timeout=0.3)) == []
            with conn.cursor() as cur:
                events.append_events(cur, [events.NewEvent(1, "zone", {"n": 2})])
            conn.commit()
        (note,) = list(listener.notifies(timeout=2, stop_after=1))
    assert note.channel == events.CHANNEL
    [(event_id, kind)] = rows(db)
    assert note.payload == str(event_id) and kind == "zone"


def test_ids_become_visible_in_id_order(db: str) -> None:
    """A second writer waits for the first one's commit, so a reader that has seen id N never
    later finds a smaller id appearing."""
    first = psycopg.connect(db)
    with first.cursor() as cur:
        events.append_events(cur, [events.NewEvent(1, "zone", {"who": "first"})])
    finished: list[float] = []

    def second() -> None:
        with psycopg.connect(db) as conn, conn.cursor() as cur:
            events.append_events(cur, [events.NewEvent(1, "zone", {"who": "second"})])
            conn.commit()
            finished.append(time.monotonic())

    thread = threading.Thread(target=second)
    thread.start()
    time.sleep(0.5)
    assert not finished, "the second writer must wait for the first one's commit"
    committed = time.monotonic()
    first.commit()
    first.close()
    thread.join(10)
    assert finished and finished[0] >= committed
    with psycopg.connect(db) as conn:
        order = conn.execute("SELECT payload->>'who' FROM ws_events ORDER BY event_id").fetchall()
    assert [o[0] for o in order] == ["first", "second"]


def test_retention_deletes_old_events_and_raises_the_watermark(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        with conn.transaction(), conn.cursor() as cur:
            events.append_events(cur, [events.NewEvent(1, "zone", {"age": "old"})] * 3)
        conn.execute("UPDATE ws_events SET ts = now() - interval '3 days'")
        with conn.transaction(), conn.cursor() as cur:
            events.append_events(cur, [events.NewEvent(1, "zone", {"age": "new"})])

    async def run() -> tuple[int, events.Positions, list[events.StoredEvent]]:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as aconn:
            deleted = await events.delete_expired(aconn, timedelta(hours=24))
            return (
                deleted,
                await events.positions(aconn, 1),
                await events.fetch_tenant_after(aconn, 1, 0, 10),
            )

    deleted, pos, left = asyncio.run(run())
    assert deleted == 3
    assert pos.deleted_through == 3 and pos.tenant_head == 4 and pos.sequence_head == 4
    assert [e.event_id for e in left] == [4]
    assert '"age": "new"' in left[0].message and left[0].message.startswith('{"id" : 4')
