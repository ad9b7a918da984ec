"""The dispatcher: drains the notification outbox through Apprise, escalates unanswered alerts.

A tick (:meth:`Dispatcher.run_once`) escalates due alerts, claims a batch of due outbox rows
(leased, rate-limited, see :func:`storage.outbox.claim_due`), sends them one by one and commits
each outcome in its own transaction right after the send. A dispatcher killed mid-send leaves
its leased rows ``sending``; when the lease runs out another (or the restarted) dispatcher
sends them, so only the one notification in flight at the kill can be delivered twice. Any
number of dispatchers may run against one database. Time comes from the injected ``now``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import psycopg

from noc.settings import Settings
from notifier import metrics
from notifier.sender import AppriseSender, Sender
from operators.ratelimit import RateLimit
from storage.alerts import escalate_due
from storage.db import connect
from storage.errors import DatabaseUnavailable, StorageError
from storage.outbox import (
    ClaimOptions,
    claim_due,
    outbox_counts,
    record_failure,
    record_success,
    release_claims,
)

log = logging.getLogger(__name__)

_DEFAULT_LIMITS: Mapping[str, RateLimit] = MappingProxyType(
    {"sms": RateLimit(10), "email": RateLimit(30), "push": RateLimit(30)}
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _default_claimer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class DispatcherConfig:
    """How a dispatcher works; see ``NotifySettings`` for the meaning of each value."""

    database_url: str
    claimer: str = field(default_factory=_default_claimer)
    batch: int = 20
    lease: timedelta = timedelta(minutes=2)
    max_attempts: int = 5
    retry_base: timedelta = timedelta(seconds=10)
    retry_max: timedelta = timedelta(minutes=15)
    limits: Mapping[str, RateLimit] = field(default_factory=lambda: _DEFAULT_LIMITS)
    escalation_delay: timedelta = timedelta(minutes=5)
    poll_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.batch < 1 or self.max_attempts < 1:
            raise ValueError("batch and max_attempts must be >= 1")
        if self.lease <= timedelta(0) or self.retry_base <= timedelta(0):
            raise ValueError("lease and retry_base must be positive")

    def build(
        self, sender: Sender | None = None, now: Callable[[], datetime] = utcnow
    ) -> Dispatcher:
        return Dispatcher(self, sender or AppriseSender(), now)


@dataclass
class TickReport:
    """What one tick (or a drain) did."""

    escalated: int = 0
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    suppressed: int = 0
    summaries: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.escalated or self.claimed or self.suppressed)

    def add(self, other: TickReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def backoff(attempt: int, base: timedelta, cap: timedelta) -> timedelta:
    """Delay before retrying after failed attempt number ``attempt`` (1, 2, ...): exponential."""
    doublings = min(max(0, attempt - 1), 32)
    return min(cap, base * (1 << doublings))


class Dispatcher:
    """Owns one database connection. Not thread-safe: run one per thread or process."""

    def __init__(
        self, config: DispatcherConfig, sender: Sender, now: Callable[[], datetime] = utcnow
    ) -> None:
        self.config = config
        self._sender = sender
        self._now = now
        self._conn: psycopg.Connection | None = None
        self._options = ClaimOptions(config.claimer, config.lease, config.batch, config.limits)

    def run_once(self, stop: threading.Event | None = None) -> TickReport:
        """Escalate, claim one batch, send it. Raises StorageError when the database fails."""
        conn = self._connection()
        report = TickReport()
        escalations = escalate_due(conn, self._now(), self.config.escalation_delay)
        report.escalated = len(escalations)
        metrics.ESCALATIONS.inc(len(escalations))
        for e in escalations:
            log.info("alert %s escalated to tier %s (%s notifications)", e.alert_id, e.tier,
                     e.notifications)  # fmt: skip
        claim = claim_due(conn, self._now(), self._options)
        report.claimed = len(claim.claimed)
        report.summaries = claim.summaries
        for channel, n in claim.suppressed.items():
            metrics.SUPPRESSED.labels(channel).inc(n)
            report.suppressed += n
        for index, claimed in enumerate(claim.claimed):
            if stop is not None and stop.is_set():
                release_claims(
                    conn, [c.id for c in claim.claimed[index:]], self.config.claimer, self._now()
                )
                break
            started = time.monotonic()
            result = self._sender.send(claimed.apprise_url, claimed.title, claimed.body)
            elapsed = time.monotonic() - started
            metrics.SEND_SECONDS.labels(claimed.channel).observe(elapsed)
            now = self._now()
            if result.ok:
                if not record_success(conn, claimed, now, self.config.claimer, elapsed * 1000):
                    log.warning("outbox %s was delivered after its lease ran out", claimed.id)
                metrics.SENT.labels(claimed.channel, claimed.kind).inc()
                report.sent += 1
                continue
            error = result.error or "delivery failed"
            retry_at = None
            if not result.permanent and claimed.attempt < self.config.max_attempts:
                retry_at = now + backoff(
                    claimed.attempt, self.config.retry_base, self.config.retry_max
                )
            record_failure(conn, claimed, now, self.config.claimer, error, retry_at,
                           elapsed * 1000)  # fmt: skip
            outcome = "retry" if retry_at is not None else "gave_up"
            metrics.FAILED.labels(claimed.channel, outcome).inc()
            if retry_at is None:
                report.failed += 1
                log.error("outbox %s (%s to recipient %s) failed for good after %s attempt(s): "
                          "%s", claimed.id, claimed.channel, claimed.recipient_id,
                          claimed.attempt, error)  # fmt: skip
            else:
                report.retried += 1
                log.warning("outbox %s attempt %s failed, retry at %s: %s", claimed.id,
                            claimed.attempt, retry_at.isoformat(), error)  # fmt: skip
        counts = outbox_counts(conn)
        metrics.PENDING.set(counts["pending"] + counts["sending"])
        return report

    def drain(self, max_ticks: int = 1000) -> TickReport:
        """Tick until a tick finds nothing to do (or ``max_ticks``); the summed report."""
        total = TickReport()
        for _ in range(max_ticks):
            report = self.run_once()
            total.add(report)
            if not report.busy:
                break
        return total

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set; idle ticks wait ``poll_interval_s``. Survives outages."""
        while not stop.is_set():
            try:
                busy = self.run_once(stop).busy
            except DatabaseUnavailable as exc:
                log.warning("database unavailable, retrying: %s", exc)
                self.close()
                busy = False
            except StorageError as exc:
                log.error("dispatch tick failed: %s", exc)
                self.close()
                busy = False
            if not busy:
                stop.wait(self.config.poll_interval_s)
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent); the next tick reconnects."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(
                self.config.database_url, autocommit=True, application_name="noc-notifier"
            )
        return self._conn


def config_from_settings(settings: Settings, claimer: str | None = None) -> DispatcherConfig:
    """The dispatcher configuration the ``NOC_NOTIFY_*`` settings describe."""
    n = settings.notify
    window = timedelta(seconds=n.rate_window_s)
    limits = {
        "sms": RateLimit(n.sms_per_window, window),
        "email": RateLimit(n.email_per_window, window),
        "push": RateLimit(n.push_per_window, window),
    }
    return DispatcherConfig(
        database_url=settings.database.url,
        claimer=claimer or _default_claimer(),
        batch=n.batch,
        lease=timedelta(seconds=n.lease_s),
        max_attempts=n.max_attempts,
        retry_base=timedelta(seconds=n.retry_base_s),
        retry_max=timedelta(seconds=n.retry_max_s),
        limits=limits,
        escalation_delay=timedelta(seconds=n.escalation_delay_s),
        poll_interval_s=n.poll_interval_s,
    )
