"""BatchWriter against the real TimescaleDB: idempotent, one transaction, alert folding."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from operators.decode import decode
from operators.records import AlertCandidate, DeadLetter, Enriched, Telemetry
from storage.writer import BatchWriter

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def db(migrated_db: str) -> str:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme')")
    return migrated_db


def telemetry(i: int, battery: float = 80.0, device: str = "d-1") -> Enriched:
    rec = Telemetry(device, T0 + timedelta(seconds=i), battery, -60.0, 25.0, f"m-{i}", T0)
    return Enriched(rec, tenant_id=1, device_id=device)


def panic(i: int, source: str = "pb-1") -> Enriched:
    item = telemetry(i, device=source)
    item.alerts.append(
        AlertCandidate(1, source, "panic", "critical", "Panic", T0 + timedelta(seconds=i))
    )
    return item


def count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        assert row is not None
        return int(row[0])


def test_rows_are_stored_once_even_when_redelivered(db: str) -> None:
    writer = BatchWriter(db)
    batch = [telemetry(i) for i in range(100)]
    first = writer.write(batch)
    again = writer.write([*batch[50:], telemetry(100)])
    assert first.inserted == {"telemetry": 100}
    assert again.inserted == {"telemetry": 1}
    assert again.duplicates == 50
    assert count(db, "SELECT count(*) FROM telemetry") == 101


def test_duplicates_inside_one_batch_are_stored_once(db: str) -> None:
    result = BatchWriter(db).write([telemetry(1), telemetry(1), telemetry(2)])
    assert result.inserted == {"telemetry": 2}
    assert count(db, "SELECT count(*) FROM telemetry") == 2


def test_dead_letters_keep_reason_and_payload_head(db: str) -> None:
    letter = decode("device/d-1/telemetry", b'{"battery": 500}', T0)
    assert isinstance(letter, DeadLetter)
    BatchWriter(db).write([letter])
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "SELECT topic, reason, detail, payload_head FROM dead_letters"
        ).fetchone()
    assert row == ("device/d-1/telemetry", "invalid_field", letter.detail, b'{"battery": 500}')


def test_repeats_fold_into_one_open_alert(db: str) -> None:
    writer = BatchWriter(db)
    writer.write([panic(i) for i in range(600)])
    writer.write([panic(i) for i in range(600, 1000)])
    writer.write([panic(i) for i in range(500)])  # redelivered: must not bump the count
    with psycopg.connect(db) as conn:
        alerts = conn.execute(
            "SELECT count, status, severity, first_seen, last_seen FROM alerts"
        ).fetchall()
        history = conn.execute("SELECT action FROM alert_history").fetchall()
    assert alerts == [(1000, "new", "critical", T0, T0 + timedelta(seconds=999))]
    assert history == [("opened",)]


def test_concurrent_writers_keep_one_open_alert(db: str) -> None:
    """Two flow workers folding the same incident at once: the database keeps one alert."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        writer = BatchWriter(db)
        try:
            barrier.wait()
            for round_ in range(10):
                writer.write([panic(offset * 1000 + round_ * 10 + i) for i in range(10)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            writer.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(db, "SELECT count(*) FROM alerts") == 1
    assert count(db, "SELECT count FROM alerts") == 400


def test_a_failed_batch_stores_nothing(db: str) -> None:
    writer = BatchWriter(db)
    bad = telemetry(2)
    bad.tenant_id = 999  # violates nothing in telemetry, but the alert's tenant FK fails
    bad.alerts.append(AlertCandidate(999, "d-1", "panic", "critical", "x", T0))
    with pytest.raises(Exception, match="batch write failed"):
        writer.write([telemetry(1), bad])
    assert count(db, "SELECT count(*) FROM telemetry") == 0
    writer.write([telemetry(1)])
    assert count(db, "SELECT count(*) FROM telemetry") == 1
