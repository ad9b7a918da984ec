"""Alert lifecycle (DESIGN.md §4.3): acknowledge, resolve, dismiss, escalate, and read alerts.

``new -> acknowledged -> resolved | false_alarm``, and ``new -> resolved | false_alarm``.
Each transition is one transaction: the alert row is locked (``SELECT ... FOR UPDATE``), the
transition checked, who/when stored on the alert and appended to ``alert_history``. An alert of
another tenant is indistinguishable from a missing one (:class:`~storage.errors.NotFound`).
Acknowledging returns the device command (``alert_ack``) for the caller to publish after the
commit. Driver errors are raised as :class:`~storage.errors.StorageError`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from noc.domain import SEVERITIES
from operators.records import DeviceCommand
from operators.routing import AlertInfo, plan_notifications
from storage.errors import AlertTransitionError, DatabaseUnavailable, NotFound, StorageError
from storage.events import append_alert_events
from storage.outbox import insert_notifications, load_recipients, load_routing

log = logging.getLogger(__name__)

STATUSES = ("new", "acknowledged", "resolved", "false_alarm")
OPEN_STATUSES = ("new", "acknowledged")
TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    {("new", "acknowledged"), ("new", "resolved"), ("new", "false_alarm"),
     ("acknowledged", "resolved"), ("acknowledged", "false_alarm")}
)  # fmt: skip
MAX_LIST = 500


@dataclass(frozen=True)
class Alert:
    """One row of ``alerts``."""

    alert_id: int
    tenant_id: int
    source_id: str
    alert_type: str
    severity: str
    status: str
    message: str
    site_id: int | None
    guard_id: int | None
    device_id: str | None
    lat: float | None
    lon: float | None
    count: int
    first_seen: datetime
    last_seen: datetime
    created_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    closed_by: str | None
    closed_at: datetime | None
    details: dict[str, Any]
    sms_sent: int
    email_sent: int
    push_sent: int
    escalation_tier: int
    escalated_at: datetime | None
    last_notified_at: datetime | None


@dataclass(frozen=True)
class HistoryEntry:
    """One row of ``alert_history``: who did what, when."""

    ts: datetime
    action: str
    actor: str
    from_status: str | None
    to_status: str | None
    note: str
    details: dict[str, Any]


@dataclass(frozen=True)
class AlertDetail:
    """An alert with its history, oldest entry first."""

    alert: Alert
    history: list[HistoryEntry]


@dataclass(frozen=True)
class Transition:
    """The alert after a transition, and the command to send its device (or None)."""

    alert: Alert
    command: DeviceCommand | None = None


_COLUMNS = sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(Alert))


def can_transition(from_status: str, to_status: str) -> bool:
    """Whether the lifecycle allows ``from_status -> to_status``. Pure."""
    return (from_status, to_status) in TRANSITIONS


def acknowledge(
    conn: psycopg.Connection,
    tenant_id: int,
    alert_id: int,
    actor: str,
    note: str = "",
    now: datetime | None = None,
) -> Transition:
    """``new -> acknowledged``; returns the ``alert_ack`` command for the alert's device."""
    at = now or datetime.now(UTC)
    alert = _transition(conn, tenant_id, alert_id, "acknowledged", actor, note, at)
    command = None
    if alert.device_id is not None:
        command = DeviceCommand(
            alert.device_id,
            {"type": "alert_ack", "alert_id": alert.alert_id, "alert_type": alert.alert_type,
             "by": actor, "at": at.isoformat()},
        )  # fmt: skip
    return Transition(alert, command)


def resolve(
    conn: psycopg.Connection,
    tenant_id: int,
    alert_id: int,
    actor: str,
    note: str = "",
    now: datetime | None = None,
) -> Transition:
    """``new | acknowledged -> resolved``."""
    at = now or datetime.now(UTC)
    return Transition(_transition(conn, tenant_id, alert_id, "resolved", actor, note, at))


def mark_false_alarm(
    conn: psycopg.Connection,
    tenant_id: int,
    alert_id: int,
    actor: str,
    note: str = "",
    now: datetime | None = None,
) -> Transition:
    """``new | acknowledged -> false_alarm``."""
    at = now or datetime.now(UTC)
    return Transition(_transition(conn, tenant_id, alert_id, "false_alarm", actor, note, at))


def _transition(
    conn: psycopg.Connection,
    tenant_id: int,
    alert_id: int,
    to_status: str,
    actor: str,
    note: str,
    at: datetime,
) -> Alert:
    if not actor.strip():
        raise ValueError("actor must name who made the change")
    who = "acknowledged" if to_status == "acknowledged" else "closed"
    with _errors("alert transition"), conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "SELECT status FROM alerts WHERE alert_id = %s AND tenant_id = %s FOR UPDATE",
            (alert_id, tenant_id),
        )
        row = cur.fetchone()
        if row is None:
            raise NotFound(f"alert {alert_id} not found")
        from_status = str(row[0])
        if not can_transition(from_status, to_status):
            raise AlertTransitionError(
                f"alert {alert_id} is {from_status}; it cannot become {to_status}"
            )
        cur.execute(
            sql.SQL(
                "UPDATE alerts SET status = %s, {by} = %s, {at} = %s WHERE alert_id = %s"
            ).format(by=sql.Identifier(f"{who}_by"), at=sql.Identifier(f"{who}_at")),
            (to_status, actor, at, alert_id),
        )
        _append_history(cur, at, tenant_id, alert_id, to_status, actor, from_status, to_status,
                        note)  # fmt: skip
        alert = _fetch_alert(cur, tenant_id, alert_id)
        append_alert_events(cur, [alert_id])  # open NOC pages see it (after commit)
        return alert


def _append_history(
    cur: psycopg.Cursor[Any],
    at: datetime,
    tenant_id: int,
    alert_id: int,
    action: str,
    actor: str,
    from_status: str | None,
    to_status: str | None,
    note: str = "",
    details: dict[str, Any] | None = None,
) -> None:
    cur.execute(
        "INSERT INTO alert_history (ts, tenant_id, alert_id, action, actor, from_status,"
        " to_status, note, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (at, tenant_id, alert_id, action, actor, from_status, to_status, note,
         Jsonb(details or {})),
    )  # fmt: skip


def get_alert(conn: psycopg.Connection, tenant_id: int, alert_id: int) -> AlertDetail:
    """The alert with its history; NotFound if missing or another tenant's."""
    with _errors("reading an alert"), conn.transaction(), conn.cursor() as cur:
        alert = _fetch_alert(cur, tenant_id, alert_id)
        with conn.cursor(row_factory=class_row(HistoryEntry)) as hcur:
            hcur.execute(
                "SELECT ts, action, actor, from_status, to_status, note, details"
                " FROM alert_history WHERE alert_id = %s AND tenant_id = %s ORDER BY ts, action",
                (alert_id, tenant_id),
            )
            history = hcur.fetchall()
    return AlertDetail(alert, history)


def list_alerts(
    conn: psycopg.Connection,
    tenant_id: int,
    status: str | None = None,
    severity: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[Alert]:
    """The tenant's alerts, newest first; page with ``before_id`` (the last id seen).

    ``status`` is one of :data:`STATUSES` or ``"open"`` (new or acknowledged).
    """
    if status is not None and status not in (*STATUSES, "open"):
        raise ValueError(f"status must be one of {', '.join((*STATUSES, 'open'))}")
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
    if not 1 <= limit <= MAX_LIST:
        raise ValueError(f"limit must be between 1 and {MAX_LIST}")
    statuses = list(OPEN_STATUSES) if status == "open" else [status] if status else None
    query = sql.SQL(
        "SELECT {cols} FROM alerts WHERE tenant_id = %s"
        " AND (%s::text[] IS NULL OR status = ANY(%s::text[]))"
        " AND (%s::text IS NULL OR severity = %s)"
        " AND (%s::bigint IS NULL OR alert_id < %s)"
        " ORDER BY alert_id DESC LIMIT %s"
    ).format(cols=_COLUMNS)
    with _errors("listing alerts"), conn.cursor(row_factory=class_row(Alert)) as cur:
        cur.execute(
            query,
            (tenant_id, statuses, statuses, severity, severity, before_id, before_id, limit),
        )
        return cur.fetchall()


def _fetch_alert(cur: psycopg.Cursor[Any], tenant_id: int, alert_id: int) -> Alert:
    cur.execute(
        sql.SQL("SELECT {cols} FROM alerts WHERE alert_id = %s AND tenant_id = %s").format(
            cols=_COLUMNS
        ),
        (alert_id, tenant_id),
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"alert {alert_id} not found")
    return Alert(*row)


# --- escalation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Escalation:
    """An alert escalated to a higher recipient tier."""

    alert_id: int
    tenant_id: int
    tier: int
    notifications: int


_ESCALATION_DUE = """
SELECT a.alert_id, a.tenant_id, a.source_id, a.alert_type, a.severity, a.message, a.site_id,
       a.device_id, a.count, a.first_seen, a.escalation_tier,
       (SELECT min(r.tier) FROM recipients r
         WHERE r.tenant_id = a.tenant_id AND r.active AND r.tier > a.escalation_tier) AS next_tier
FROM alerts a
WHERE a.status = 'new' AND a.severity = 'critical'
  AND COALESCE(a.escalated_at, a.created_at) <= %s
  AND EXISTS (SELECT 1 FROM recipients r
               WHERE r.tenant_id = a.tenant_id AND r.active AND r.tier > a.escalation_tier)
ORDER BY a.alert_id
LIMIT %s
FOR UPDATE OF a SKIP LOCKED
"""


def escalate_due(
    conn: psycopg.Connection, now: datetime, delay: timedelta, limit: int = 50
) -> list[Escalation]:
    """Escalate critical alerts still ``new`` ``delay`` after opening (or the last escalation).

    Each is notified to the next configured recipient tier (kind ``escalation``, on the
    channels the tenant routes critical alerts to), once per tier; ``escalation_tier`` and
    ``escalated_at`` move on and ``alert_history`` gets an ``escalated`` entry. One
    transaction; rows locked with SKIP LOCKED so concurrent dispatchers share the work.
    """
    minutes = delay.total_seconds() / 60
    done: list[Escalation] = []
    with _errors("escalating alerts"), conn.transaction(), conn.cursor() as cur:
        cur.execute(_ESCALATION_DUE, (now - delay, limit))
        due = cur.fetchall()
        if not due:
            return done
        tenants = {row[1] for row in due}
        routing = load_routing(cur, tenants)
        recipients = load_recipients(cur, tenants)
        for row in due:
            info = AlertInfo(*row[:10])
            from_tier, tier = int(row[10]), int(row[11])
            note = f"Unacknowledged for {minutes:g} min; escalated to tier {tier}."
            channels = routing[info.tenant_id].channels_for(info.severity)
            planned, missing = plan_notifications(
                info, channels, recipients, "escalation", tier, note
            )
            for channel in missing:
                log.warning(
                    "tenant %s: alert %s escalated to tier %s has no active %s recipient "
                    "there; channel skipped", info.tenant_id, info.alert_id, tier, channel,
                )  # fmt: skip
            queued = insert_notifications(cur, planned, due=now)
            cur.execute(
                "UPDATE alerts SET escalation_tier = %s, escalated_at = %s WHERE alert_id = %s",
                (tier, now, info.alert_id),
            )
            details = {"from_tier": from_tier, "tier": tier, "notifications": queued}
            _append_history(cur, now, info.tenant_id, info.alert_id, "escalated", "system",
                            "new", "new", note, details)  # fmt: skip
            done.append(Escalation(info.alert_id, info.tenant_id, tier, queued))
        append_alert_events(cur, [e.alert_id for e in done])
    return done


@contextmanager
def _errors(what: str) -> Iterator[None]:
    try:
        yield
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"{what} failed: {_line(exc)}") from exc
    except psycopg.Error as exc:
        raise StorageError(f"{what} failed: {_line(exc)}") from exc


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
