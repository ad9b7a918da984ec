"""The notification outbox against the real database: enqueue with the alert, claim, record."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from operators.ratelimit import RateLimit
from operators.routing import NewNotification
from storage.outbox import (
    ClaimOptions,
    claim_due,
    insert_notifications,
    outbox_counts,
    record_failure,
    record_success,
)
from storage.writer import BatchWriter
from tests.notifier.support import add_recipients, alarm, migrated_scratch, query, reset

URL = "json://127.0.0.1:9/unused"
TEAM = [
    ("sms-a", "sms", URL, 1),
    ("sms-b", "sms", URL, 1),
    ("mail", "email", URL, 1),
    ("push", "push", URL, 1),
    ("boss-sms", "sms", URL, 2),
]


@pytest.fixture(scope="module")
def shared_db(postgres: str) -> Iterator[str]:
    yield from migrated_scratch(postgres)


@pytest.fixture
def db(shared_db: str) -> str:
    return reset(shared_db)


def outbox(db: str) -> list[tuple[str, str, str, int]]:
    rows = query(
        db,
        "SELECT r.name, o.channel, o.kind, o.tier FROM notification_outbox o"
        " JOIN recipients r USING (recipient_id) ORDER BY r.name",
    )
    return [(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]


def test_a_panic_queues_one_row_per_routed_channel_and_tier1_recipient(db: str) -> None:
    add_recipients(db, TEAM)
    add_recipients(db, [("gone", "sms", URL, 1)], active=False)
    add_recipients(db, [("other-tenant", "sms", URL, 1)], tenant_id=2)
    BatchWriter(db).write([alarm(1)])
    assert outbox(db) == [
        ("mail", "email", "alert", 1),
        ("push", "push", "alert", 1),
        ("sms-a", "sms", "alert", 1),
        ("sms-b", "sms", "alert", 1),
    ]
    [(title, body, status)] = query(
        db, "SELECT DISTINCT title, body, status FROM notification_outbox"
    )
    assert title == "[CRITICAL] panic - pb-1"
    assert body.startswith("panic from pb-1\nalert #1, source pb-1\nfirst seen ")
    assert status == "pending"


def test_repeats_folded_into_the_open_alert_do_not_notify_again(db: str) -> None:
    add_recipients(db, TEAM)
    writer = BatchWriter(db)
    writer.write([alarm(i) for i in range(300)])
    writer.write([alarm(i) for i in range(300, 1000)])
    assert query(db, "SELECT count, status FROM alerts") == [(1000, "new")]
    assert len(outbox(db)) == 4


@pytest.mark.parametrize(
    ("severity", "channels"),
    [
        ("critical", ["email", "push", "sms", "sms"]),
        ("high", ["email", "push"]),
        ("medium", ["email"]),
        ("low", []),
        ("info", []),
    ],
)
def test_default_routing_by_severity(db: str, severity: str, channels: list[str]) -> None:
    add_recipients(db, TEAM)
    BatchWriter(db).write([alarm(1, alert_type="thing", severity=severity)])
    assert [c for _, c, _, _ in outbox(db)] == channels


def test_tenant_routing_override_from_the_database(db: str) -> None:
    add_recipients(db, TEAM)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenant_settings VALUES (1, 'routing', %s)",
            (Jsonb({"critical": ["push"], "low": ["email"]}),),
        )
    BatchWriter(db).write([alarm(1), alarm(2, "s-9", "battery", "low")])
    assert sorted(c for _, c, _, _ in outbox(db)) == ["email", "push"]


def test_invalid_routing_override_falls_back_to_the_default(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    add_recipients(db, TEAM)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenant_settings VALUES (1, 'routing', %s)", (Jsonb({"critical": "sms"}),)
        )
    with caplog.at_level(logging.ERROR, "storage.outbox"):
        BatchWriter(db).write([alarm(1)])
    assert len(outbox(db)) == 4
    assert "invalid 'routing' setting ignored" in caplog.text


def test_an_unconfigured_channel_is_skipped_with_a_warning(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    add_recipients(db, [("mail", "email", URL, 1), ("boss-sms", "sms", URL, 2)])
    with caplog.at_level(logging.WARNING, "storage.outbox"):
        result = BatchWriter(db).write([alarm(1)])
    assert result.alerts[0].opened
    assert outbox(db) == [("mail", "email", "alert", 1)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "routes to sms but no active tier-1 sms recipient" in warnings[0]
    assert "routes to push but no active tier-1 push recipient" in warnings[1]


def test_a_failed_batch_queues_nothing(db: str) -> None:
    add_recipients(db, TEAM)
    bad = alarm(2, tenant_id=999)  # unknown tenant: the alert insert fails, the batch rolls back
    with pytest.raises(Exception, match="batch write failed"):
        BatchWriter(db).write([alarm(1), bad])
    assert outbox(db) == []


def test_enqueueing_is_idempotent(db: str) -> None:
    ids = add_recipients(db, TEAM)
    BatchWriter(db).write([alarm(1)])
    row = NewNotification(1, 1, ids["sms-a"], "sms", "alert", 1, "t", "b")
    with psycopg.connect(db) as conn, conn.cursor() as cur:
        assert insert_notifications(cur, [row, row]) == 0
        escalation = NewNotification(1, 1, ids["boss-sms"], "sms", "escalation", 2, "t", "b")
        assert insert_notifications(cur, [escalation]) == 1
        assert insert_notifications(cur, [escalation]) == 0


# --- claims -----------------------------------------------------------------------------------


def opts(name: str = "d1", batch: int = 100, **limits: int) -> ClaimOptions:
    return ClaimOptions(name, timedelta(minutes=1), batch, {c: RateLimit(n) for c, n in limits.items()})  # fmt: skip


def test_concurrent_claims_never_share_a_row(db: str) -> None:
    add_recipients(db, [(f"m{i}", "email", URL, 1) for i in range(5)])
    BatchWriter(db).write([alarm(i, f"src-{i}") for i in range(40)])  # 40 alerts x 5 = 200 rows
    now = datetime.now(UTC) + timedelta(seconds=1)
    claimed: list[list[int]] = []
    barrier = threading.Barrier(4)

    def claim(name: str) -> None:
        with psycopg.connect(db, autocommit=True) as conn:
            barrier.wait()
            mine: list[int] = []
            while batch := claim_due(conn, now, opts(name, batch=7)).claimed:
                mine.extend(c.id for c in batch)
            claimed.append(mine)

    threads = [threading.Thread(target=claim, args=(f"d{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for mine in claimed for i in mine]
    assert len(every) == len(set(every)) == 200


def test_expired_lease_is_claimed_again(db: str) -> None:
    add_recipients(db, [("mail", "email", URL, 1)])
    BatchWriter(db).write([alarm(1)])
    now = datetime.now(UTC) + timedelta(seconds=1)
    with psycopg.connect(db, autocommit=True) as conn:
        [first] = claim_due(conn, now, opts("dead")).claimed
        assert claim_due(conn, now + timedelta(seconds=59), opts("other")).claimed == []
        [again] = claim_due(conn, now + timedelta(seconds=61), opts("other")).claimed
    assert again.id == first.id
    assert query(db, "SELECT status, claimed_by FROM notification_outbox") == [("sending", "other")]


def test_success_and_failure_are_recorded(db: str) -> None:
    add_recipients(db, [("sms-a", "sms", URL, 1), ("mail", "email", URL, 1)])
    BatchWriter(db).write([alarm(1)])
    now = datetime.now(UTC) + timedelta(seconds=1)
    with psycopg.connect(db, autocommit=True) as conn:
        sms, mail = sorted(claim_due(conn, now, opts()).claimed, key=lambda c: c.channel)[::-1]
        assert record_success(conn, sms, now, "d1", 12.5) is True
        retry_at = now + timedelta(seconds=10)
        assert record_failure(conn, mail, now, "d1", "HTTP 500", retry_at) == "pending"
        assert outbox_counts(conn) == {"pending": 1, "sending": 0, "sent": 1, "failed": 0,
                                       "suppressed": 0}  # fmt: skip
        assert claim_due(conn, now + timedelta(seconds=9), opts()).claimed == []
        [again] = claim_due(conn, retry_at, opts()).claimed
        assert again.attempt == 2
        assert record_failure(conn, again, retry_at, "d1", "HTTP 500", None) == "failed"
    assert query(db, "SELECT sms_sent, email_sent, push_sent, last_notified_at FROM alerts") == [
        (1, 0, 0, now)
    ]
    deliveries = query(
        db, "SELECT channel, attempt, ok, error FROM notification_deliveries ORDER BY ts, ok DESC"
    )
    assert deliveries == [("sms", 1, True, None), ("email", 1, False, "HTTP 500"),
                          ("email", 2, False, "HTTP 500")]  # fmt: skip


def test_rate_limit_suppresses_then_summarises_once_the_window_reopens(db: str) -> None:
    ids = add_recipients(db, [("sms-a", "sms", URL, 1), ("mail", "email", URL, 1)])
    BatchWriter(db).write([alarm(i, f"src-{i:02d}") for i in range(25)])
    now = datetime.now(UTC) + timedelta(seconds=1)
    with psycopg.connect(db, autocommit=True) as conn:
        first = claim_due(conn, now, opts(sms=10, email=30))
        assert first.suppressed == {"sms": 15}
        sent = [c for c in first.claimed if c.channel == "sms"]
        assert len(sent) == 10 and len(first.claimed) == 35
        for c in first.claimed:
            record_success(conn, c, now, "d1")
        later = now + timedelta(seconds=30)
        assert claim_due(conn, later, opts(sms=10, email=30)).claimed == []  # window still full
        reopened = now + timedelta(seconds=60)
        result = claim_due(conn, reopened, opts(sms=10, email=30))
        [summary] = result.claimed
        assert result.summaries == 1
        assert (summary.kind, summary.recipient_id, summary.alert_id) == (
            "summary",
            ids["sms-a"],
            None,
        )
        assert summary.title == "15 more alerts suppressed"
        assert summary.body.startswith("15 more alerts suppressed: [CRITICAL] panic - src-10; ")
        record_success(conn, summary, reopened, "d1")
        assert (
            claim_due(conn, reopened + timedelta(minutes=5), opts(sms=10, email=30)).claimed == []
        )
    unreported = query(
        db,
        "SELECT count(*) FROM notification_outbox WHERE status = 'suppressed' AND summary_id IS NULL",
    )
    assert unreported == [(0,)]
