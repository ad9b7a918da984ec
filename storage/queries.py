"""Tenant-scoped reads for the API (guards, zones, devices, tracks, counters) and zone edits.

Every function takes the tenant id and filters on it: a row of another tenant is reported as
:class:`~storage.errors.NotFound`, exactly like a row that does not exist. Row mapping is pure
(the ``_*_view`` functions); results are frozen dataclasses the API serialises as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from storage.errors import NotFound, StorageError

if TYPE_CHECKING:
    from collections.abc import Sequence

SEVERITIES = ("critical", "high", "medium", "low", "info")
ZONE_STATUSES = ("inside", "outside", "uncertain", "unzoned")


class InvalidReference(StorageError):
    """The input names a row of another tenant or one that does not exist (e.g. a site)."""


class Conflict(StorageError):
    """The change conflicts with an existing row (e.g. a zone name already in use)."""


# --- guards --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PositionView:
    """A guard's fix and its geofence classification."""

    ts: datetime
    lat: float
    lon: float
    accuracy: float | None
    zone_status: str
    zone_id: int | None
    zone_distance_m: float | None


@dataclass(frozen=True, slots=True)
class GuardView:
    """A guard with approved zones, their device and latest position (None if none yet)."""

    guard_id: int
    name: str
    site_id: int | None
    on_shift: bool
    device_id: str | None
    zone_ids: list[int]
    position: PositionView | None


_GUARDS = """
SELECT g.guard_id, g.name, g.site_id, g.on_shift,
       (SELECT min(d.device_id) FROM devices d
         WHERE d.guard_id = g.guard_id AND d.kind = 'guard_device'),
       coalesce((SELECT array_agg(gz.zone_id ORDER BY gz.zone_id) FROM guard_zones gz
                  WHERE gz.guard_id = g.guard_id), '{}'),
       p.ts, p.lat, p.lon, p.accuracy, p.zone_status, p.zone_id, p.zone_distance_m
FROM guards g
LEFT JOIN LATERAL (
    SELECT ts, lat, lon, accuracy, zone_status, zone_id, zone_distance_m FROM positions
    WHERE positions.guard_id = g.guard_id AND positions.tenant_id = g.tenant_id
    ORDER BY ts DESC LIMIT 1
) p ON true
WHERE g.tenant_id = %s
"""


def _guard_view(r: Sequence[Any]) -> GuardView:
    position = None
    if r[6] is not None:
        position = PositionView(r[6], r[7], r[8], r[9], r[10], r[11], r[12])
    return GuardView(r[0], r[1], r[2], r[3], r[4], list(r[5]), position)


def list_guards(conn: psycopg.Connection, tenant_id: int) -> list[GuardView]:
    """The tenant's guards with their latest position, by guard id."""
    rows = conn.execute(_GUARDS + " ORDER BY g.guard_id", (tenant_id,)).fetchall()
    return [_guard_view(r) for r in rows]


def get_guard(conn: psycopg.Connection, tenant_id: int, guard_id: int) -> GuardView:
    """One guard of the tenant; NotFound otherwise."""
    row = conn.execute(_GUARDS + " AND g.guard_id = %s", (tenant_id, guard_id)).fetchone()
    if row is None:
        raise NotFound(f"no guard {guard_id}")
    return _guard_view(row)


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """One stored fix of a guard."""

    ts: datetime
    lat: float
    lon: float
    accuracy: float | None
    zone_status: str
    zone_id: int | None


def guard_track(
    conn: psycopg.Connection,
    tenant_id: int,
    guard_id: int,
    since: datetime,
    until: datetime,
    limit: int,
) -> list[TrackPoint]:
    """The guard's fixes with ``since <= ts < until`` in time order (the first ``limit``).

    NotFound if the guard is not the tenant's.
    """
    exists = conn.execute(
        "SELECT 1 FROM guards WHERE guard_id = %s AND tenant_id = %s", (guard_id, tenant_id)
    ).fetchone()
    if exists is None:
        raise NotFound(f"no guard {guard_id}")
    rows = conn.execute(
        "SELECT ts, lat, lon, accuracy, zone_status, zone_id FROM positions"
        " WHERE guard_id = %s AND tenant_id = %s AND ts >= %s AND ts < %s"
        " ORDER BY ts LIMIT %s",
        (guard_id, tenant_id, since, until, limit),
    ).fetchall()
    return [TrackPoint(*r) for r in rows]


# --- devices -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceView:
    """A device and what it last reported. ``status``: online | offline | never.

    ``last_seen`` is the newest of its last telemetry, alert and (for a guard device) its
    guard's last position; a device is online while that is within three reporting intervals.
    """

    device_id: str
    kind: str
    site_id: int | None
    guard_id: int | None
    reporting_interval_s: int
    last_seen: datetime | None
    status: str
    battery: float | None
    signal: float | None
    temperature: float | None


_DEVICES = """
SELECT d.device_id, d.kind, d.site_id, d.guard_id, d.reporting_interval_s,
       seen.last_seen,
       CASE WHEN seen.last_seen IS NULL THEN 'never'
            WHEN seen.last_seen >= now() - make_interval(secs => 3 * d.reporting_interval_s)
            THEN 'online' ELSE 'offline' END,
       t.battery, t.signal, t.temperature
FROM devices d
LEFT JOIN LATERAL (
    SELECT ts, battery, signal, temperature FROM telemetry
    WHERE telemetry.device_id = d.device_id ORDER BY ts DESC LIMIT 1
) t ON true
LEFT JOIN LATERAL (
    SELECT max(ts) AS ts FROM (
        (SELECT ts FROM device_alerts WHERE source_id = d.device_id ORDER BY ts DESC LIMIT 1)
        UNION ALL
        (SELECT ts FROM positions
          WHERE d.kind = 'guard_device' AND positions.guard_id = d.guard_id
          ORDER BY ts DESC LIMIT 1)
    ) x
) other ON true
CROSS JOIN LATERAL (SELECT GREATEST(t.ts, other.ts) AS last_seen) seen
WHERE d.tenant_id = %s
ORDER BY d.device_id
"""


def list_devices(conn: psycopg.Connection, tenant_id: int) -> list[DeviceView]:
    """The tenant's devices with last-seen time and status, by device id."""
    return [DeviceView(*r) for r in conn.execute(_DEVICES, (tenant_id,)).fetchall()]


# --- counters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """Counters of the NOC page: open alerts by severity, guards by latest zone status."""

    open_alerts: dict[str, int]
    guards: dict[str, int]


def summary(conn: psycopg.Connection, tenant_id: int) -> Summary:
    """Open (new or acknowledged) alerts per severity and guards per zone status.

    A guard with no position yet counts as ``unknown``.
    """
    alerts = dict.fromkeys(SEVERITIES, 0)
    for severity, n in conn.execute(
        "SELECT severity, count(*) FROM alerts WHERE tenant_id = %s"
        " AND status IN ('new', 'acknowledged') GROUP BY severity",
        (tenant_id,),
    ):
        alerts[str(severity)] = int(n)
    guards = dict.fromkeys((*ZONE_STATUSES, "unknown"), 0)
    for g in list_guards(conn, tenant_id):
        key = g.position.zone_status if g.position else "unknown"
        guards[key] = guards.get(key, 0) + 1
    return Summary(alerts, guards)


# --- zones ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ZoneView:
    """A zone: GeoJSON ``geometry`` (Polygon / MultiPolygon) or a circle (centre, radius)."""

    zone_id: int
    site_id: int | None
    name: str
    geometry: dict[str, Any] | None
    center_lat: float | None
    center_lon: float | None
    radius_m: float | None
    windows: list[dict[str, Any]]
    active: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ZoneInput:
    """A zone as created or replaced; validated by the caller (exactly one shape)."""

    name: str
    site_id: int | None
    geometry: dict[str, Any] | None
    center_lat: float | None
    center_lon: float | None
    radius_m: float | None
    windows: list[dict[str, Any]]
    active: bool


_ZONE_COLUMNS = (
    "zone_id, site_id, name, geometry, center_lat, center_lon, radius_m, windows, active,"
    " updated_at"
)


def list_zones(conn: psycopg.Connection, tenant_id: int) -> list[ZoneView]:
    """The tenant's zones, by zone id."""
    rows = conn.execute(
        "SELECT " + _ZONE_COLUMNS + " FROM zones WHERE tenant_id = %s ORDER BY zone_id",
        (tenant_id,),
    ).fetchall()
    return [ZoneView(*r) for r in rows]


def get_zone(conn: psycopg.Connection, tenant_id: int, zone_id: int) -> ZoneView:
    """One zone of the tenant; NotFound otherwise."""
    row = conn.execute(
        "SELECT " + _ZONE_COLUMNS + " FROM zones WHERE tenant_id = %s AND zone_id = %s",
        (tenant_id, zone_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"no zone {zone_id}")
    return ZoneView(*row)


def create_zone(conn: psycopg.Connection, tenant_id: int, zone: ZoneInput) -> ZoneView:
    """Insert a zone with the next free id (in the caller's transaction)."""
    _check_site(conn, tenant_id, zone.site_id)
    # Zone ids are global integers without a sequence: serialise allocation.
    conn.execute("LOCK TABLE zones IN SHARE ROW EXCLUSIVE MODE")
    row = conn.execute("SELECT coalesce(max(zone_id), 0) + 1 FROM zones").fetchone()
    assert row is not None
    zone_id = int(row[0])
    values = _zone_values(zone)
    with _unique_names(zone.name):
        conn.execute(
            sql.SQL(
                "INSERT INTO zones (zone_id, tenant_id, {cols}) VALUES (%s, %s, {marks})"
            ).format(
                cols=sql.SQL(", ").join(map(sql.Identifier, values)),
                marks=sql.SQL(", ").join(sql.Placeholder() * len(values)),
            ),
            (zone_id, tenant_id, *values.values()),
        )
    return get_zone(conn, tenant_id, zone_id)


def update_zone(
    conn: psycopg.Connection, tenant_id: int, zone_id: int, zone: ZoneInput
) -> ZoneView:
    """Replace a zone of the tenant (in the caller's transaction); NotFound otherwise."""
    _check_site(conn, tenant_id, zone.site_id)
    values = _zone_values(zone)
    with _unique_names(zone.name):
        cur = conn.execute(
            sql.SQL(
                "UPDATE zones SET {sets}, updated_at = now() WHERE tenant_id = %s AND zone_id = %s"
            ).format(
                sets=sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in values
                )
            ),
            (*values.values(), tenant_id, zone_id),
        )
    if cur.rowcount == 0:
        raise NotFound(f"no zone {zone_id}")
    return get_zone(conn, tenant_id, zone_id)


def delete_zone(conn: psycopg.Connection, tenant_id: int, zone_id: int) -> None:
    """Delete a zone of the tenant (guards lose the approval); NotFound otherwise."""
    cur = conn.execute(
        "DELETE FROM zones WHERE tenant_id = %s AND zone_id = %s", (tenant_id, zone_id)
    )
    if cur.rowcount == 0:
        raise NotFound(f"no zone {zone_id}")


def _zone_values(zone: ZoneInput) -> dict[str, Any]:
    return {
        "site_id": zone.site_id,
        "name": zone.name,
        "geometry": Jsonb(zone.geometry) if zone.geometry is not None else None,
        "center_lat": zone.center_lat,
        "center_lon": zone.center_lon,
        "radius_m": zone.radius_m,
        "windows": Jsonb(zone.windows),
        "active": zone.active,
    }


def _check_site(conn: psycopg.Connection, tenant_id: int, site_id: int | None) -> None:
    if site_id is None:
        return
    row = conn.execute(
        "SELECT 1 FROM sites WHERE site_id = %s AND tenant_id = %s", (site_id, tenant_id)
    ).fetchone()
    if row is None:
        raise InvalidReference(f"no site {site_id}")


@contextmanager
def _unique_names(name: str) -> Iterator[None]:
    """Turns a unique violation on zone names into :class:`Conflict`."""
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"a zone named {name!r} already exists") from exc
