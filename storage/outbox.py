"""The notification outbox: enqueue in the alert's transaction, claim, record each attempt.

Enqueueing (:func:`enqueue_notifications`) runs inside the batch writer's transaction, so a
notification exists if and only if the alert that causes it was committed; the unique key
``(alert_id, recipient_id, kind, tier)`` makes it idempotent. Dispatchers drain the outbox:
:func:`claim_due` takes due rows with ``FOR UPDATE SKIP LOCKED`` (several dispatchers never
take the same row), applies the per-recipient rate limits and leases the rows it keeps
(status ``sending`` until ``claimed_until``; a dispatcher that dies loses its lease and the rows
become due again). :func:`record_success` / :func:`record_failure` commit one attempt each.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg
from psycopg import sql

from operators.errors import ConfigError
from operators.ratelimit import RateLimit, SlidingWindowLimiter
from operators.routing import (
    CHANNELS,
    ROUTING_KEY,
    AlertInfo,
    NewNotification,
    Recipient,
    RoutingConfig,
    plan_notifications,
    summary_text,
)
from storage.errors import DatabaseUnavailable, StorageError

log = logging.getLogger(__name__)

KINDS = ("alert", "escalation", "summary")
STATUSES = ("pending", "sending", "sent", "failed", "suppressed")
_LOCK_CLASS = 0x4E4F54  # "NOT": advisory lock namespace, one lock per recipient


class AlertRef(Protocol):
    """What enqueueing needs of an alert (``storage.writer.OpenedAlert`` fits)."""

    @property
    def alert_id(self) -> int: ...

    @property
    def tenant_id(self) -> int: ...

    @property
    def severity(self) -> str: ...


# --- enqueue ----------------------------------------------------------------------------------


def enqueue_notifications(cur: psycopg.Cursor[Any], alerts: Sequence[AlertRef]) -> int:
    """Queue tier-1 notifications for newly opened alerts, in the caller's transaction.

    One pending row per routed channel and active tier-1 recipient of that channel. A routed
    channel without a recipient is skipped with a warning. Idempotent. Returns rows inserted.
    """
    if not alerts:
        return 0
    routing = load_routing(cur, {a.tenant_id for a in alerts})
    routed = [a for a in alerts if routing[a.tenant_id].channels_for(a.severity)]
    if not routed:
        return 0
    recipients = load_recipients(cur, {a.tenant_id for a in routed}, tier=1)
    infos = load_alert_infos(cur, [a.alert_id for a in routed])
    rows: list[NewNotification] = []
    for a in routed:
        info = infos.get(a.alert_id)
        if info is None:
            continue
        planned, missing = plan_notifications(
            info, routing[a.tenant_id].channels_for(info.severity), recipients, "alert", 1
        )
        rows.extend(planned)
        for channel in missing:
            log.warning(
                "tenant %s: %s alert %s routes to %s but no active tier-1 %s recipient is "
                "configured; channel skipped",
                a.tenant_id, info.severity, a.alert_id, channel, channel,
            )  # fmt: skip
    return insert_notifications(cur, rows)


def insert_notifications(
    cur: psycopg.Cursor[Any], rows: Sequence[NewNotification], due: datetime | None = None
) -> int:
    """Insert outbox rows (pending, due at ``due`` or the transaction's time); skip repeats."""
    if not rows:
        return 0
    columns: list[list[Any]] = [[] for _ in range(8)]
    for row in rows:
        for column, value in zip(
            columns,
            (row.tenant_id, row.alert_id, row.recipient_id, row.channel, row.kind, row.tier,
             row.title, row.body),
            strict=True,
        ):  # fmt: skip
            column.append(value)
    cur.execute(
        "INSERT INTO notification_outbox (tenant_id, alert_id, recipient_id, channel, kind,"
        " tier, title, body, next_attempt_at)"
        " SELECT u.*, COALESCE(%s::timestamptz, now()) FROM unnest(%s::integer[], %s::bigint[],"
        " %s::integer[], %s::text[], %s::text[], %s::integer[], %s::text[], %s::text[]) AS u"
        " ON CONFLICT ON CONSTRAINT notification_outbox_once DO NOTHING RETURNING id",
        [due, *columns],
    )
    return len(cur.fetchall())


def load_routing(cur: psycopg.Cursor[Any], tenant_ids: Iterable[int]) -> dict[int, RoutingConfig]:
    """Each tenant's routing: the default with the tenant's override applied.

    An invalid override is logged as an error and ignored (the default applies): a bad setting
    must never stop alerts from being stored.
    """
    ids = sorted(set(tenant_ids))
    default = RoutingConfig()
    routing = dict.fromkeys(ids, default)
    cur.execute(
        "SELECT tenant_id, value FROM tenant_settings WHERE key = %s AND tenant_id = ANY(%s)",
        (ROUTING_KEY, ids),
    )
    for tenant_id, value in cur.fetchall():
        try:
            routing[tenant_id] = default.with_overrides(value)
        except ConfigError as exc:
            log.error("tenant %s: invalid %r setting ignored: %s", tenant_id, ROUTING_KEY, exc)
    return routing


def load_recipients(
    cur: psycopg.Cursor[Any], tenant_ids: Iterable[int], tier: int | None = None
) -> list[Recipient]:
    """Active recipients of the tenants (of one tier, if given)."""
    cur.execute(
        "SELECT recipient_id, tenant_id, channel, tier FROM recipients"
        " WHERE active AND tenant_id = ANY(%s) AND (%s::integer IS NULL OR tier = %s)"
        " ORDER BY recipient_id",
        (sorted(set(tenant_ids)), tier, tier),
    )
    return [Recipient(*row) for row in cur.fetchall()]


def load_alert_infos(cur: psycopg.Cursor[Any], alert_ids: Sequence[int]) -> dict[int, AlertInfo]:
    cur.execute(
        "SELECT alert_id, tenant_id, source_id, alert_type, severity, message, site_id,"
        " device_id, count, first_seen FROM alerts WHERE alert_id = ANY(%s)",
        (list(alert_ids),),
    )
    return {row[0]: AlertInfo(*row) for row in cur.fetchall()}


# --- claim ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    """An outbox row leased to one dispatcher, with what it takes to send it."""

    id: int
    tenant_id: int
    alert_id: int | None
    recipient_id: int
    channel: str
    kind: str
    tier: int
    title: str
    body: str
    attempts: int
    apprise_url: str

    @property
    def attempt(self) -> int:
        """The number of the attempt about to be made (1 = first)."""
        return self.attempts + 1


@dataclass
class ClaimResult:
    """What one claim transaction did."""

    claimed: list[Claimed] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)
    deferred: int = 0
    summaries: int = 0
    dropped: int = 0  # recipient deleted or deactivated: marked failed


@dataclass(frozen=True)
class ClaimOptions:
    """How a dispatcher claims: who it is, lease length, batch size, rate limits per channel."""

    claimer: str
    lease: timedelta = timedelta(minutes=2)
    batch: int = 20
    limits: Mapping[str, RateLimit] = field(default_factory=dict)


_DUE = """
SELECT id, tenant_id, alert_id, recipient_id, channel, kind, tier, title, body, attempts
FROM notification_outbox
WHERE status IN ('pending', 'sending') AND next_attempt_at <= %s
ORDER BY next_attempt_at, id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""

_RECENT = """
SELECT recipient_id, sent_at FROM notification_outbox
WHERE status = 'sent' AND recipient_id = ANY(%(r)s::integer[]) AND sent_at > %(since)s
UNION ALL
SELECT recipient_id, claimed_at FROM notification_outbox
WHERE status = 'sending' AND recipient_id = ANY(%(r)s::integer[]) AND claimed_at > %(since)s
  AND NOT (id = ANY(%(mine)s::bigint[]))
"""


def claim_due(conn: psycopg.Connection, now: datetime, options: ClaimOptions) -> ClaimResult:
    """Lease up to ``options.batch`` due rows to this dispatcher, in one transaction.

    Per recipient (serialised across dispatchers by an advisory lock): a row within the
    recipient's rate limit is leased (``sending``); an alert or escalation over the limit is
    marked ``suppressed``; once the window reopens, the suppressed rows not yet reported are
    summed up in one ``summary`` row, leased here too. Summaries over the limit wait.
    """
    try:
        with conn.transaction(), conn.cursor() as cur:
            return _claim(cur, now, options)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"claiming notifications failed: {_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StorageError(f"claiming notifications failed: {_line(exc)}") from exc


def _claim(cur: psycopg.Cursor[Any], now: datetime, options: ClaimOptions) -> ClaimResult:
    cur.execute(_DUE, (now, options.batch))
    due_by_recipient: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for row in cur.fetchall():
        due_by_recipient[row[3]].append(row)
    cur.execute(
        "SELECT DISTINCT recipient_id FROM notification_outbox"
        " WHERE status = 'suppressed' AND summary_id IS NULL"
    )
    waiting = {r[0] for r in cur.fetchall()}
    recipient_ids = sorted(set(due_by_recipient) | waiting)
    result = ClaimResult()
    if not recipient_ids:
        return result
    for recipient_id in recipient_ids:  # in order: no deadlock between dispatchers
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, recipient_id))
    cur.execute(
        "SELECT recipient_id, tenant_id, channel, apprise_url FROM recipients"
        " WHERE active AND recipient_id = ANY(%s)",
        (recipient_ids,),
    )
    active = {r[0]: r for r in cur.fetchall()}
    mine = [row[0] for rows in due_by_recipient.values() for row in rows]
    windows = [lim.window for lim in options.limits.values()] or [timedelta(0)]
    cur.execute(_RECENT, {"r": recipient_ids, "since": now - max(windows), "mine": mine})
    recent: dict[int, list[datetime]] = defaultdict(list)
    for recipient_id, at in cur.fetchall():
        recent[recipient_id].append(at)
    cur.execute(
        "SELECT recipient_id, id, title FROM notification_outbox"
        " WHERE status = 'suppressed' AND summary_id IS NULL AND recipient_id = ANY(%s)"
        " ORDER BY recipient_id, id",
        (recipient_ids,),
    )
    suppressed: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for recipient_id, row_id, title in cur.fetchall():
        suppressed[recipient_id].append((row_id, title))

    plan = _Plan()
    for recipient_id in recipient_ids:
        recipient = active.get(recipient_id)
        due = due_by_recipient.get(recipient_id, [])
        if recipient is None:
            plan.drop.extend(row[0] for row in due)
            plan.drop.extend(row_id for row_id, _ in suppressed.get(recipient_id, []))
            continue
        _, tenant_id, channel, url = recipient
        limit = options.limits.get(channel)
        limiter = limit.build() if limit is not None else None
        for at in recent.get(recipient_id, []):
            if limiter is not None:
                limiter.record(at)
        waiting_rows = suppressed.get(recipient_id, [])
        if waiting_rows and _allowed(limiter, now):
            summary = _insert_summary(cur, tenant_id, recipient_id, channel, waiting_rows)
            plan.summaries.append((summary, [row_id for row_id, _ in waiting_rows]))
            plan.lease.append(Claimed(summary[0], tenant_id, None, recipient_id, channel,
                                      "summary", 1, summary[1], summary[2], 0, url))  # fmt: skip
        for row in due:
            if limiter is None or limiter.try_acquire(now).allowed:
                plan.lease.append(_claimed(row, url))
            elif row[5] == "summary":
                reopens = limiter.check(now).reopens_at or now
                plan.defer.append((row[0], reopens))
            else:
                plan.suppress.append((row[0], channel, limiter.config))
    _apply(cur, plan, now, options, result)
    return result


@dataclass
class _Plan:
    lease: list[Claimed] = field(default_factory=list)
    suppress: list[tuple[int, str, RateLimit]] = field(default_factory=list)
    defer: list[tuple[int, datetime]] = field(default_factory=list)
    drop: list[int] = field(default_factory=list)
    summaries: list[tuple[tuple[int, str, str], list[int]]] = field(default_factory=list)


def _claimed(row: tuple[Any, ...], url: str) -> Claimed:
    id_, tenant_id, alert_id, recipient_id, channel, kind, tier, title, body, attempts = row
    return Claimed(id_, tenant_id, alert_id, recipient_id, channel, kind, tier, title, body,
                   attempts, url)  # fmt: skip


def _allowed(limiter: SlidingWindowLimiter | None, now: datetime) -> bool:
    return limiter is None or limiter.try_acquire(now).allowed


def _insert_summary(
    cur: psycopg.Cursor[Any],
    tenant_id: int,
    recipient_id: int,
    channel: str,
    rows: Sequence[tuple[int, str]],
) -> tuple[int, str, str]:
    title, body = summary_text([title for _, title in rows])
    cur.execute(
        "INSERT INTO notification_outbox (tenant_id, alert_id, recipient_id, channel, kind,"
        " tier, title, body, status) VALUES (%s, NULL, %s, %s, 'summary', 1, %s, %s, 'sending')"
        " RETURNING id",
        (tenant_id, recipient_id, channel, title, body),
    )
    row = cur.fetchone()
    assert row is not None
    return int(row[0]), title, body


def _apply(
    cur: psycopg.Cursor[Any],
    plan: _Plan,
    now: datetime,
    options: ClaimOptions,
    result: ClaimResult,
) -> None:
    until = now + options.lease
    if plan.lease:
        cur.execute(
            "UPDATE notification_outbox SET status = 'sending', claimed_by = %s,"
            " claimed_at = %s, claimed_until = %s, next_attempt_at = %s WHERE id = ANY(%s)",
            (options.claimer, now, until, until, [c.id for c in plan.lease]),
        )
    for (summary_id, _, _), row_ids in plan.summaries:
        cur.execute(
            "UPDATE notification_outbox SET summary_id = %s WHERE id = ANY(%s)",
            (summary_id, row_ids),
        )
    for row_id, channel, limit in plan.suppress:
        cur.execute(
            "UPDATE notification_outbox SET status = 'suppressed', claimed_by = NULL,"
            " claimed_at = NULL, claimed_until = NULL, last_error = %s WHERE id = %s",
            (f"rate limited: more than {limit.limit} per {limit.window}", row_id),
        )
        result.suppressed[channel] = result.suppressed.get(channel, 0) + 1
    for row_id, reopens_at in plan.defer:
        cur.execute(
            "UPDATE notification_outbox SET status = 'pending', claimed_by = NULL,"
            " claimed_at = NULL, claimed_until = NULL, next_attempt_at = %s WHERE id = %s",
            (reopens_at, row_id),
        )
    if plan.drop:
        cur.execute(
            "UPDATE notification_outbox SET status = 'failed', claimed_until = NULL,"
            " last_error = 'recipient deleted or inactive' WHERE id = ANY(%s)",
            (plan.drop,),
        )
    result.claimed = plan.lease
    result.deferred = len(plan.defer)
    result.summaries = len(plan.summaries)
    result.dropped = len(plan.drop)


# --- results ----------------------------------------------------------------------------------

_DELIVERY = """
INSERT INTO notification_deliveries (ts, tenant_id, outbox_id, attempt, channel, recipient_id,
                                     ok, error, duration_ms, dispatcher)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


def record_success(
    conn: psycopg.Connection,
    claimed: Claimed,
    now: datetime,
    claimer: str,
    duration_ms: float | None = None,
) -> bool:
    """Mark a delivered row sent, log the attempt, bump the alert's channel counter.

    Returns False when the row was no longer leased to this dispatcher (its lease ran out and
    another dispatcher took it, or already sent it): the delivery is still logged and counted.
    """
    counter = sql.Identifier(f"{_channel(claimed.channel)}_sent")
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "UPDATE notification_outbox SET status = 'sent', sent_at = %s,"
                " attempts = attempts + 1, claimed_until = NULL, last_error = NULL"
                " WHERE id = %s AND status IN ('sending', 'pending') RETURNING claimed_by",
                (now, claimed.id),
            )
            row = cur.fetchone()
            cur.execute(_DELIVERY, _delivery(claimed, now, True, None, duration_ms, claimer))
            if claimed.alert_id is not None:
                cur.execute(
                    sql.SQL(
                        "UPDATE alerts SET {c} = {c} + 1, last_notified_at ="
                        " GREATEST(last_notified_at, %s) WHERE alert_id = %s"
                    ).format(c=counter),
                    (now, claimed.alert_id),
                )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"recording a delivery failed: {_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StorageError(f"recording a delivery failed: {_line(exc)}") from exc
    return row is not None and row[0] == claimer


def record_failure(
    conn: psycopg.Connection,
    claimed: Claimed,
    now: datetime,
    claimer: str,
    error: str,
    retry_at: datetime | None,
    duration_ms: float | None = None,
) -> str:
    """Log a failed attempt; schedule the retry at ``retry_at``, or mark the row failed (None).

    Returns the row's new status (unchanged if the lease was lost to another dispatcher).
    """
    status = "pending" if retry_at is not None else "failed"
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "UPDATE notification_outbox SET status = %s, attempts = attempts + 1,"
                " last_error = %s, claimed_until = NULL,"
                " next_attempt_at = COALESCE(%s, next_attempt_at)"
                " WHERE id = %s AND status = 'sending' AND claimed_by = %s RETURNING status",
                (status, error[:1000], retry_at, claimed.id, claimer),
            )
            row = cur.fetchone()
            cur.execute(_DELIVERY, _delivery(claimed, now, False, error, duration_ms, claimer))
            if row is None:
                cur.execute("SELECT status FROM notification_outbox WHERE id = %s", (claimed.id,))
                row = cur.fetchone()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"recording a failed delivery failed: {_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StorageError(f"recording a failed delivery failed: {_line(exc)}") from exc
    return str(row[0]) if row else status


def release_claims(
    conn: psycopg.Connection, ids: Sequence[int], claimer: str, now: datetime
) -> int:
    """Give leased rows back (due at ``now``) without an attempt, e.g. on shutdown."""
    if not ids:
        return 0
    try:
        cur = conn.execute(
            "UPDATE notification_outbox SET status = 'pending', claimed_by = NULL,"
            " claimed_at = NULL, claimed_until = NULL, next_attempt_at = %s"
            " WHERE id = ANY(%s::bigint[]) AND status = 'sending' AND claimed_by = %s",
            (now, list(ids), claimer),
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"releasing claims failed: {_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StorageError(f"releasing claims failed: {_line(exc)}") from exc
    return cur.rowcount


def outbox_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Rows per status (every status present, zero if none)."""
    try:
        rows = conn.execute(
            "SELECT status, count(*) FROM notification_outbox GROUP BY status"
        ).fetchall()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"counting the outbox failed: {_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StorageError(f"counting the outbox failed: {_line(exc)}") from exc
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({str(s): int(n) for s, n in rows})
    return counts


def _delivery(
    c: Claimed, now: datetime, ok: bool, error: str | None, ms: float | None, claimer: str
) -> tuple[Any, ...]:
    return (now, c.tenant_id, c.id, c.attempt, c.channel, c.recipient_id, ok,
            error[:1000] if error else None, ms, claimer)  # fmt: skip


def _channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise StorageError(f"unknown channel {channel!r}")
    return channel


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
