"""The dispatcher end to end: real database, real Apprise, a real HTTP endpoint on loopback.

Time is injected (``Clock``): retries, rate-limit windows and escalation delays pass without
sleeping.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from prometheus_client import REGISTRY

from notifier.dispatcher import Dispatcher, DispatcherConfig, backoff
from notifier.sender import AppriseSender
from operators.ratelimit import RateLimit
from storage.alerts import acknowledge, get_alert
from storage.writer import BatchWriter
from tests.notifier.support import (
    CaptureServer,
    Clock,
    add_recipients,
    alarm,
    migrated_scratch,
    query,
    reset,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared_db(postgres: str) -> Iterator[str]:
    yield from migrated_scratch(postgres)


@pytest.fixture
def db(shared_db: str) -> str:
    return reset(shared_db)


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def team(capture: CaptureServer) -> list[tuple[str, str, str, int]]:
    return [
        ("sms-a", "sms", capture.url("sms-a"), 1),
        ("sms-b", "sms", capture.url("sms-b"), 1),
        ("mail", "email", capture.url("mail", "form"), 1),
        ("push", "push", capture.url("push"), 1),
        ("boss", "sms", capture.url("boss"), 2),
        ("director", "email", capture.url("director"), 3),
    ]


def dispatcher(db: str, clock: Clock, **overrides: object) -> Dispatcher:
    config = DispatcherConfig(database_url=db, claimer="test", **overrides)  # type: ignore[arg-type]
    return config.build(AppriseSender(), clock)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def paths(capture: CaptureServer) -> Counter[str]:
    return Counter(c.path for c in capture.snapshot())


def test_a_panic_notifies_every_channel_and_recipient_once(db: str, capture: CaptureServer) -> None:
    add_recipients(db, team(capture))
    add_recipients(db, [("retired", "sms", capture.url("retired"), 1)], active=False)
    sent_before = metric("noc_notifications_sent_total", channel="sms", kind="alert")
    BatchWriter(db).write([alarm(1)])
    clock = Clock()
    report = dispatcher(db, clock).drain()
    assert (report.sent, report.failed, report.suppressed) == (4, 0, 0)
    assert paths(capture) == {"/sms-a": 1, "/sms-b": 1, "/mail": 1, "/push": 1}
    [mail] = capture.at("mail")  # form:// post
    assert mail.title == "[CRITICAL] panic - pb-1"
    assert mail.message.startswith("panic from pb-1\nalert #1")
    assert query(db, "SELECT sms_sent, email_sent, push_sent, last_notified_at FROM alerts") == [
        (2, 1, 1, clock())
    ]
    assert query(db, "SELECT status, count(*) FROM notification_outbox GROUP BY 1") == [("sent", 4)]
    assert query(db, "SELECT count(*) FROM notification_deliveries WHERE ok") == [(4,)]
    assert metric("noc_notifications_sent_total", channel="sms", kind="alert") == sent_before + 2
    assert metric("noc_notification_outbox_pending") == 0
    assert dispatcher(db, clock).drain().sent == 0  # nothing twice


def test_1000_identical_panics_make_one_alert_and_at_most_the_sms_limit(
    db: str, capture: CaptureServer
) -> None:
    add_recipients(db, team(capture))
    writer = BatchWriter(db)
    clock = Clock()
    d = dispatcher(db, clock)
    for start in range(0, 1000, 100):  # batches as the flow would write them, within a minute
        writer.write([alarm(i) for i in range(start, start + 100)])
        d.run_once()
        clock.advance(seconds=5)
    d.drain()
    assert query(db, "SELECT count(*), sum(count) FROM alerts") == [(1, 1000)]
    counts = paths(capture)
    assert counts["/sms-a"] <= 10 and counts["/sms-b"] <= 10
    assert counts == {"/sms-a": 1, "/sms-b": 1, "/mail": 1, "/push": 1}


def test_a_burst_over_the_rate_limit_is_suppressed_then_summarised(
    db: str, capture: CaptureServer
) -> None:
    add_recipients(db, team(capture)[:3])  # sms-a, sms-b, mail
    suppressed_before = metric("noc_notifications_suppressed_total", channel="sms")
    BatchWriter(db).write([alarm(i, f"door-{i:02d}") for i in range(25)])
    clock = Clock()
    d = dispatcher(db, clock)
    report = d.drain()
    assert report.suppressed == 30  # 15 per SMS recipient
    assert paths(capture) == {"/sms-a": 10, "/sms-b": 10, "/mail": 25}
    assert metric("noc_notifications_suppressed_total", channel="sms") == suppressed_before + 30
    clock.advance(seconds=59)
    assert d.drain().sent == 0  # the window has not reopened
    clock.advance(seconds=1)
    assert d.drain().sent == 2  # one summary per SMS recipient, nothing dropped silently
    summary = capture.at("sms-a")[-1]
    assert summary.title == "15 more alerts suppressed"
    assert summary.message.startswith("15 more alerts suppressed: [CRITICAL] panic - door-10; ")
    clock.advance(minutes=10)
    assert d.drain().sent == 0
    assert paths(capture) == {"/sms-a": 11, "/sms-b": 11, "/mail": 25}
    statuses = query(
        db, "SELECT kind, status, count(*) FROM notification_outbox GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert statuses == [("alert", "sent", 45), ("alert", "suppressed", 30), ("summary", "sent", 2)]


def test_failed_deliveries_are_retried_with_exponential_backoff(
    db: str, capture: CaptureServer
) -> None:
    add_recipients(db, [("mail", "email", capture.url("mail"), 1)])
    capture.fail("mail", 2)
    BatchWriter(db).write([alarm(1)])
    clock = Clock()
    d = dispatcher(db, clock, retry_base=timedelta(seconds=10))
    assert d.drain().retried == 1
    clock.advance(seconds=9)
    assert d.drain().claimed == 0
    clock.advance(seconds=1)
    assert d.drain().retried == 1  # second failure: next try 20 s later
    clock.advance(seconds=19)
    assert d.drain().claimed == 0
    clock.advance(seconds=1)
    assert d.drain().sent == 1
    assert len(capture.at("mail")) == 1
    attempts = query(db, "SELECT attempt, ok, error FROM notification_deliveries ORDER BY attempt")
    assert [(a, ok) for a, ok, _ in attempts] == [(1, False), (2, False), (3, True)]
    assert "error=500" in attempts[0][2]
    assert query(db, "SELECT status, attempts FROM notification_outbox") == [("sent", 3)]


def test_gives_up_after_max_attempts(db: str, capture: CaptureServer) -> None:
    add_recipients(db, [("mail", "email", capture.url("mail"), 1),
                        ("typo", "sms", "nosuchscheme://what", 1)])  # fmt: skip
    capture.fail("mail", 100)
    BatchWriter(db).write([alarm(1)])
    clock = Clock()
    d = dispatcher(db, clock, max_attempts=3, retry_base=timedelta(seconds=1))
    for _ in range(5):
        d.drain()
        clock.advance(minutes=1)
    rows = query(
        db, "SELECT channel, status, attempts, last_error FROM notification_outbox ORDER BY 1"
    )
    assert [r[:3] for r in rows] == [("email", "failed", 3), ("sms", "failed", 1)]
    assert rows[1][3] == "invalid Apprise URL for this recipient"  # permanent: not retried


def test_backoff_doubles_up_to_the_cap() -> None:
    base, cap = timedelta(seconds=10), timedelta(minutes=2)
    assert [backoff(n, base, cap).total_seconds() for n in range(1, 7)] == [
        10,
        20,
        40,
        80,
        120,
        120,
    ]
    assert backoff(10_000, base, cap) == cap


def test_unacknowledged_critical_alert_escalates_once_per_tier(
    db: str, capture: CaptureServer
) -> None:
    add_recipients(db, team(capture))
    BatchWriter(db).write([alarm(1)])
    clock = Clock()
    d = dispatcher(db, clock, escalation_delay=timedelta(minutes=5))
    d.drain()
    clock.advance(minutes=4, seconds=59)
    assert d.drain().escalated == 0
    clock.advance(seconds=2)
    report = d.drain()
    assert (report.escalated, report.sent) == (1, 1)  # tier 2: the boss, by SMS
    [boss] = capture.at("boss")
    assert boss.title == "ESCALATION tier 2: [CRITICAL] panic - pb-1"
    assert "Unacknowledged for 5 min; escalated to tier 2." in boss.message
    assert d.drain().escalated == 0  # once per tier
    clock.advance(minutes=5)
    assert d.drain().escalated == 1  # tier 3: the director, by e-mail
    assert len(capture.at("director")) == 1
    clock.advance(minutes=30)
    assert d.drain().escalated == 0  # no tier 4
    with psycopg.connect(db, autocommit=True) as conn:
        detail = get_alert(conn, 1, 1)
    escalations = [
        (h.action, h.actor, h.details["tier"]) for h in detail.history if h.action == "escalated"
    ]
    assert escalations == [("escalated", "system", 2), ("escalated", "system", 3)]
    assert detail.alert.escalation_tier == 3


def test_acknowledged_alert_does_not_escalate(db: str, capture: CaptureServer) -> None:
    add_recipients(db, team(capture))
    BatchWriter(db).write([alarm(1), alarm(2, "sensor-2", "fire")])
    clock = Clock()
    d = dispatcher(db, clock)
    d.drain()
    with psycopg.connect(db, autocommit=True) as conn:
        acknowledge(conn, 1, 1, "alice", now=clock())
    clock.advance(minutes=6)
    assert d.drain().escalated == 1  # only the fire
    assert [c.title for c in capture.at("boss")] == [
        "ESCALATION tier 2: [CRITICAL] fire - sensor-2"
    ]


def test_concurrent_dispatchers_deliver_each_notification_once(
    db: str, capture: CaptureServer
) -> None:
    add_recipients(
        db, [("m1", "email", capture.url("m1"), 1), ("m2", "push", capture.url("m2"), 1)]
    )
    BatchWriter(db).write([alarm(i, f"src-{i}") for i in range(30)])
    clock = Clock()
    limits = {"email": RateLimit(1000), "push": RateLimit(1000)}
    barrier = threading.Barrier(3)

    def run(name: str) -> None:
        d = DispatcherConfig(db, claimer=name, batch=4, limits=limits).build(AppriseSender(), clock)
        barrier.wait()
        d.drain()
        d.close()

    threads = [threading.Thread(target=run, args=(f"d{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = Counter((c.path, c.title) for c in capture.snapshot())
    assert len(got) == 60
    assert set(got.values()) == {1}
    claimers = query(db, "SELECT count(DISTINCT claimed_by) FROM notification_outbox")
    assert claimers[0][0] >= 2  # the work really was shared
