"""WebSocket events: appended in the transaction that caused them, read by the API's fan-out.

Writer contract: events are appended at the *end* of a transaction (after every row lock it
takes), under a transaction-scoped advisory lock that is held until commit, so ids become
visible in id order: once a reader sees event N, every event < N is visible or never will be
(rolled back). ``pg_notify('noc_ws_events', max id)`` is issued in the same transaction;
PostgreSQL delivers it only on commit, so a notified event is always a committed one.
Readers therefore page through ``event_id > cursor`` and never miss or repeat an event.

Event types: ``alert`` (an alert was opened), ``alert_update`` (folded, acknowledged,
resolved, dismissed), ``position`` (latest fix of a guard in a batch), ``device_status``
(a device reported, at most once per device per :data:`DEVICE_STATUS_INTERVAL_S` per writer
connection), ``zone`` (a zone was created, changed or deleted).

The message a client receives is built by PostgreSQL once per event:
``{"id": N, "type": ..., "ts": ..., "data": {...}}``; ``ts`` is when the event was appended
(``clock_timestamp()``, just before its transaction commits), not the transaction's start.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from psycopg import sql
from psycopg.types.json import Jsonb

from operators.records import DeadLetter, Enriched, Position, Telemetry
from storage.rows import source_key

if TYPE_CHECKING:
    import psycopg

CHANNEL = "noc_ws_events"
"""The NOTIFY channel (payload: the highest event id of the committing transaction)."""

DEVICE_STATUS_INTERVAL_S = 30.0
"""Least time between two ``device_status`` events of one device from one writer connection."""

_LOCK_KEY = 0x4E4F4357  # "NOCW": orders event ids by commit


class _Touched(Protocol):
    """What the writer knows about an alert a batch touched (``storage.writer.OpenedAlert``)."""

    @property
    def alert_id(self) -> int: ...

    @property
    def opened(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; ``payload`` must be JSON-serialisable (times as ISO strings)."""

    tenant_id: int
    type: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A committed event as the API sends it: ``message`` is the JSON text for clients."""

    event_id: int
    tenant_id: int
    message: str


# --- building events from a batch (pure) ---------------------------------------------------


def position_events(items: Iterable[Enriched | DeadLetter]) -> list[NewEvent]:
    """The latest position of each guard among ``items`` (by fix time), one event per guard."""
    latest: dict[tuple[int, int], Enriched] = {}
    for item in items:
        if isinstance(item, Enriched) and isinstance(item.record, Position):
            key = (item.tenant_id, item.record.guard_id)
            prev = latest.get(key)
            if prev is None or item.record.ts >= prev.record.ts:
                latest[key] = item
    events = []
    for (tenant_id, guard_id), item in latest.items():
        r = item.record
        assert isinstance(r, Position)
        events.append(
            NewEvent(
                tenant_id,
                "position",
                {
                    "guard_id": guard_id,
                    "device_id": item.device_id,
                    "site_id": item.site_id,
                    "ts": r.ts.isoformat(),
                    "lat": r.lat,
                    "lon": r.lon,
                    "accuracy": r.accuracy,
                    "zone_status": item.zone_status,
                    "zone_id": item.zone_id,
                    "zone_distance_m": item.zone_distance_m,
                },
            )
        )
    return events


def device_status_events(items: Iterable[Enriched | DeadLetter]) -> list[NewEvent]:
    """The latest telemetry of each device among ``items``, one event per device."""
    latest: dict[tuple[int, str], Telemetry] = {}
    for item in items:
        if isinstance(item, Enriched) and isinstance(item.record, Telemetry):
            key = (item.tenant_id, item.record.device_id)
            prev = latest.get(key)
            if prev is None or item.record.ts >= prev.ts:
                latest[key] = item.record
    return [
        NewEvent(
            tenant_id,
            "device_status",
            {
                "device_id": device_id,
                "last_seen": r.ts.isoformat(),
                "battery": r.battery,
                "signal": r.signal,
                "temperature": r.temperature,
            },
        )
        for (tenant_id, device_id), r in latest.items()
    ]


class _Throttle:
    """Per key, lets one event through per interval (monotonic clock)."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._last: dict[tuple[int, str], float] = {}

    def due(self, key: tuple[int, str], now: float) -> bool:
        """Whether an event for ``key`` would be let through at ``now``."""
        last = self._last.get(key)
        return last is None or now - last >= self._interval_s

    def admit(self, events: list[NewEvent], now: float) -> list[NewEvent]:
        out = []
        for e in events:
            key = (e.tenant_id, str(e.payload["device_id"]))
            if self.due(key, now):
                self._last[key] = now
                out.append(e)
        return out


# One throttle per writer connection: a fresh connection (a new writer, a test) starts afresh.
_THROTTLES: weakref.WeakKeyDictionary[Any, _Throttle] = weakref.WeakKeyDictionary()


# --- appending (sync: the batch writer and the API's REST handlers) -------------------------

_ALERT_EVENTS = """
INSERT INTO ws_events (tenant_id, type, payload, ts)
SELECT a.tenant_id,
       CASE WHEN u.opened THEN 'alert' ELSE 'alert_update' END,
       jsonb_build_object(
           'alert_id', a.alert_id, 'tenant_id', a.tenant_id, 'source_id', a.source_id,
           'alert_type', a.alert_type, 'severity', a.severity, 'status', a.status,
           'message', a.message, 'site_id', a.site_id, 'guard_id', a.guard_id,
           'device_id', a.device_id, 'lat', a.lat, 'lon', a.lon, 'count', a.count,
           'first_seen', a.first_seen, 'last_seen', a.last_seen, 'created_at', a.created_at,
           'acknowledged_by', a.acknowledged_by, 'acknowledged_at', a.acknowledged_at,
           'closed_by', a.closed_by, 'closed_at', a.closed_at),
       clock_timestamp()
FROM unnest(%b::bigint[], %b::boolean[]) WITH ORDINALITY AS u(alert_id, opened, ord)
JOIN alerts a ON a.alert_id = u.alert_id
ORDER BY u.ord
RETURNING event_id
"""

_PLAIN_EVENTS = """
INSERT INTO ws_events (tenant_id, type, payload, ts)
SELECT t, ty, p, clock_timestamp()
FROM unnest(%b::integer[], %b::text[], %b::jsonb[]) WITH ORDINALITY AS u(t, ty, p, ord)
ORDER BY ord
RETURNING event_id
"""


def append_batch_events(
    cur: psycopg.Cursor[Any],
    batch: Sequence[Enriched | DeadLetter],
    alerts: Sequence[_Touched],
    new_keys: Collection[tuple[str, str, str]],
) -> int:
    """Append the events of one ingest batch in the caller's transaction; return how many.

    ``alerts`` are the alerts the batch touched (``alert`` when opened, else
    ``alert_update``); ``new_keys`` are the :func:`~storage.rows.source_key` of the items that
    were new, so a redelivered message produces no event. Must be the last statement before
    commit (it takes the ordering lock).
    """
    throttle = _THROTTLES.get(cur.connection)
    if throttle is None:
        throttle = _THROTTLES[cur.connection] = _Throttle(DEVICE_STATUS_INTERVAL_S)
    now = time.monotonic()
    fresh: list[Enriched] = []
    for item in batch:  # cheap tests first: most telemetry is throttled away
        if not isinstance(item, Enriched):
            continue
        r = item.record
        if (
            isinstance(r, Position)
            or (isinstance(r, Telemetry) and throttle.due((item.tenant_id, r.device_id), now))
        ) and source_key(item) in new_keys:
            fresh.append(item)
    plain = position_events(fresh)
    plain.extend(throttle.admit(device_status_events(fresh), now))
    return _append(cur, [(a.alert_id, a.opened) for a in alerts], plain)


def append_alert_events(cur: psycopg.Cursor[Any], alert_ids: Sequence[int]) -> int:
    """Append an ``alert_update`` with the current state of each alert (e.g. after an
    acknowledgement) in the caller's transaction. Must be the last statement before commit."""
    return _append(cur, [(a, False) for a in alert_ids], [])


def append_events(cur: psycopg.Cursor[Any], events: Sequence[NewEvent]) -> int:
    """Append arbitrary events in the caller's transaction. Must be last before commit."""
    return _append(cur, [], list(events))


def _append(cur: psycopg.Cursor[Any], alerts: list[tuple[int, bool]], plain: list[NewEvent]) -> int:
    if not alerts and not plain:
        return 0
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
    ids: list[int] = []
    if alerts:
        cur.execute(_ALERT_EVENTS, ([a for a, _ in alerts], [o for _, o in alerts]))
        ids.extend(int(r[0]) for r in cur.fetchall())
    if plain:
        cur.execute(
            _PLAIN_EVENTS,
            (
                [e.tenant_id for e in plain],
                [e.type for e in plain],
                [Jsonb(e.payload) for e in plain],
            ),
        )
        ids.extend(int(r[0]) for r in cur.fetchall())
    if ids:
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(max(ids))))
    return len(ids)


# --- reading (async: the API's listener, catch-up and retention) ----------------------------

_MESSAGE = sql.SQL(
    "SELECT event_id, tenant_id,"
    " json_build_object('id', event_id, 'type', type, 'ts', ts, 'data', payload)::text"
    " FROM ws_events"
)


async def fetch_after(
    aconn: psycopg.AsyncConnection[Any], after_id: int, limit: int
) -> list[StoredEvent]:
    """Committed events of every tenant with id > ``after_id``, in id order (at most limit)."""
    cur = await aconn.execute(
        sql.SQL("{} WHERE event_id > %s ORDER BY event_id LIMIT %s").format(_MESSAGE),
        (after_id, limit),
    )
    return [StoredEvent(int(r[0]), int(r[1]), str(r[2])) for r in await cur.fetchall()]


async def fetch_tenant_after(
    aconn: psycopg.AsyncConnection[Any], tenant_id: int, after_id: int, limit: int
) -> list[StoredEvent]:
    """One tenant's committed events with id > ``after_id``, in id order (at most limit)."""
    cur = await aconn.execute(
        sql.SQL("{} WHERE tenant_id = %s AND event_id > %s ORDER BY event_id LIMIT %s").format(
            _MESSAGE
        ),
        (tenant_id, after_id, limit),
    )
    return [StoredEvent(int(r[0]), int(r[1]), str(r[2])) for r in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class Positions:
    """Where the event stream stands, for a client that connects."""

    tenant_head: int
    """Highest event id of the tenant (0 if none)."""
    sequence_head: int
    """Highest event id ever handed out (any tenant)."""
    deleted_through: int
    """Events with id <= this may have been deleted by retention."""


async def positions(aconn: psycopg.AsyncConnection[Any], tenant_id: int) -> Positions:
    """The tenant's head, the id sequence's head and the retention watermark."""
    cur = await aconn.execute(
        "SELECT (SELECT coalesce(max(event_id), 0) FROM ws_events WHERE tenant_id = %s),"
        " (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM ws_events_event_id_seq),"
        " (SELECT deleted_through FROM ws_events_retention)",
        (tenant_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return Positions(int(row[0]), int(row[1]), int(row[2] or 0))


async def global_head(aconn: psycopg.AsyncConnection[Any]) -> int:
    """Highest committed event id of any tenant (0 if none)."""
    cur = await aconn.execute("SELECT coalesce(max(event_id), 0) FROM ws_events")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def delete_expired(aconn: psycopg.AsyncConnection[Any], max_age: timedelta) -> int:
    """Delete events older than ``max_age``, raise the retention watermark; return how many.

    Runs in its own transaction (``aconn`` must be in autocommit mode or idle).
    """
    async with aconn.transaction():
        cur = await aconn.execute(
            "WITH gone AS (DELETE FROM ws_events WHERE ts < now() - %s RETURNING event_id)"
            " UPDATE ws_events_retention SET ran_at = now(),"
            " deleted_through = GREATEST(deleted_through,"
            "                            (SELECT coalesce(max(event_id), 0) FROM gone))"
            " RETURNING (SELECT count(*) FROM gone)",
            (max_age,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0
