"""Seed the registry (tenants, sites, zones, guards, devices, recipients) from a description.

The description is plain data (:class:`RegistrySeed` and its parts), produced for example by the
device simulator; this module owns the SQL. :func:`seed_registry` upserts everything in one
transaction and is idempotent: seeding the same description twice leaves the same rows, and
seeding a different description over the same ids converges to it (names, geometry, links).

Example recipients point at a loopback capture endpoint only: seeding refuses any other host,
so a demo can never notify a real person.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from storage.errors import StorageError

if TYPE_CHECKING:
    import psycopg

DEFAULT_NOTIFY_URL = "json://127.0.0.1:8025/notify"
DEVICE_KINDS = ("guard_device", "sensor", "panic_button", "gateway")
CHANNELS = ("sms", "email", "push")
_LOCK_KEY = 0x4E4F4353  # "NOCS": serialises concurrent seeders


class SchemaNotMigrated(StorageError):
    """The registry tables do not exist yet."""


class SeedError(StorageError):
    """The registry description cannot be stored (bad data or a conflicting existing row)."""


@dataclass(frozen=True, slots=True)
class TenantSeed:
    """A customer. ``tenant_id`` >= 1 (0 is the system tenant, created by the schema)."""

    tenant_id: int
    name: str
    auto_register: bool = False


@dataclass(frozen=True, slots=True)
class SiteSeed:
    """A guarded site; ``lat``/``lon`` is its centre, ``timezone`` an IANA name."""

    site_id: int
    tenant_id: int
    name: str
    timezone: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class ZoneSeed:
    """An approved zone: a polygon (``ring``: closed ring of (lon, lat)) or a circle."""

    zone_id: int
    tenant_id: int
    site_id: int
    name: str
    ring: tuple[tuple[float, float], ...] | None = None
    center_lat: float | None = None
    center_lon: float | None = None
    radius_m: float | None = None

    def __post_init__(self) -> None:
        is_polygon = self.ring is not None
        is_circle = self.radius_m is not None
        if is_polygon == is_circle:
            raise SeedError(f"zone {self.zone_id}: give either a ring or a circle, not both")
        if self.ring is not None and (len(self.ring) < 4 or self.ring[0] != self.ring[-1]):
            raise SeedError(f"zone {self.zone_id}: a ring needs >= 4 points, first == last")
        if is_circle and (self.center_lat is None or self.center_lon is None):
            raise SeedError(f"zone {self.zone_id}: a circle needs center_lat and center_lon")

    def geojson(self) -> dict[str, Any] | None:
        """The GeoJSON Polygon stored in ``zones.geometry`` (None for a circle)."""
        if self.ring is None:
            return None
        return {"type": "Polygon", "coordinates": [[[lon, lat] for lon, lat in self.ring]]}


@dataclass(frozen=True, slots=True)
class GuardSeed:
    """A guard, the site they work at and the zones they are approved to be in."""

    guard_id: int
    tenant_id: int
    site_id: int
    name: str
    zone_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DeviceSeed:
    """A device; ``kind`` is one of :data:`DEVICE_KINDS`."""

    device_id: str
    tenant_id: int
    kind: str
    site_id: int | None = None
    guard_id: int | None = None
    reporting_interval_s: int = 60

    def __post_init__(self) -> None:
        if self.kind not in DEVICE_KINDS:
            raise SeedError(f"device {self.device_id}: kind {self.kind!r} not in {DEVICE_KINDS}")
        if self.reporting_interval_s <= 0:
            raise SeedError(f"device {self.device_id}: reporting_interval_s must be > 0")


@dataclass(frozen=True, slots=True)
class RecipientSeed:
    """A person (or rota) notified on one channel through an Apprise URL."""

    tenant_id: int
    name: str
    channel: str
    apprise_url: str
    tier: int = 1


@dataclass(frozen=True, slots=True)
class RegistrySeed:
    """Everything :func:`seed_registry` stores. Ids are small positive integers."""

    tenants: tuple[TenantSeed, ...]
    sites: tuple[SiteSeed, ...]
    zones: tuple[ZoneSeed, ...]
    guards: tuple[GuardSeed, ...]
    devices: tuple[DeviceSeed, ...]
    recipients: tuple[RecipientSeed, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        """Rows per table (guard_zones counted from the guards' zone ids)."""
        return {
            "tenants": len(self.tenants),
            "sites": len(self.sites),
            "zones": len(self.zones),
            "guards": len(self.guards),
            "guard_zones": sum(len(g.zone_ids) for g in self.guards),
            "devices": len(self.devices),
            "recipients": len(self.recipients),
        }


def example_recipients(
    tenants: Sequence[TenantSeed], notify_url: str = DEFAULT_NOTIFY_URL
) -> tuple[RecipientSeed, ...]:
    """Per tenant: an on-call operator on SMS, e-mail and push (tier 1) and a supervisor on
    e-mail (tier 2, for escalations), all delivered to ``notify_url`` (must be loopback)."""
    check_loopback_url(notify_url)
    out: list[RecipientSeed] = []
    for t in tenants:
        for channel in CHANNELS:
            out.append(RecipientSeed(t.tenant_id, "On-call operator", channel, notify_url, 1))
        out.append(RecipientSeed(t.tenant_id, "Duty supervisor", "email", notify_url, 2))
    return tuple(out)


def check_loopback_url(url: str) -> None:
    """Raise SeedError unless ``url`` points at this machine (demo notifications stay local)."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SeedError(f"notification URL {url!r} must point at a loopback address (127.0.0.1)")


def check_migrated(conn: psycopg.Connection[Any]) -> None:
    """Raise SchemaNotMigrated (one line) if the registry tables are missing."""
    row = conn.execute("SELECT to_regclass('devices') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        raise SchemaNotMigrated("database is not migrated: run `noc db migrate`")


def seed_registry(
    conn: psycopg.Connection[Any],
    registry: RegistrySeed,
    notify_url: str = DEFAULT_NOTIFY_URL,
) -> None:
    """Upsert ``registry`` in one transaction (idempotent).

    Recipients are ``registry.recipients`` if given, else :func:`example_recipients` at
    ``notify_url``. Every recipient URL must be loopback. Commits, unless the caller already has
    a transaction open, in which case the writes become part of it.
    """
    import psycopg

    _validate(registry)
    recipients = registry.recipients or example_recipients(registry.tenants, notify_url)
    for r in recipients:
        check_loopback_url(r.apprise_url)
    check_migrated(conn)
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            _upsert_tenants(conn, registry.tenants)
            _upsert_sites(conn, registry.sites)
            _upsert_zones(conn, registry.zones)
            _upsert_guards(conn, registry.guards)
            _replace_guard_zones(conn, registry.guards)
            _upsert_devices(conn, registry.devices)
            _upsert_recipients(conn, recipients)
    except psycopg.errors.IntegrityError as exc:
        detail = (exc.diag.message_primary or str(exc)).strip().splitlines()[0]
        raise SeedError(f"cannot seed the registry: {detail}") from exc


def _validate(reg: RegistrySeed) -> None:
    tenants = {t.tenant_id for t in reg.tenants}
    if 0 in tenants:
        raise SeedError("tenant 0 is the system tenant; seed tenants from 1")
    sites = {s.site_id: s.tenant_id for s in reg.sites}
    zones = {z.zone_id: (z.tenant_id, z.site_id) for z in reg.zones}
    for s in reg.sites:
        if s.tenant_id not in tenants:
            raise SeedError(f"site {s.site_id}: unknown tenant {s.tenant_id}")
    for z in reg.zones:
        if sites.get(z.site_id) != z.tenant_id:
            raise SeedError(f"zone {z.zone_id}: site {z.site_id} is not tenant {z.tenant_id}'s")
    for g in reg.guards:
        if sites.get(g.site_id) != g.tenant_id:
            raise SeedError(f"guard {g.guard_id}: site {g.site_id} is not tenant {g.tenant_id}'s")
        for zid in g.zone_ids:
            if zid not in zones or zones[zid][0] != g.tenant_id:
                raise SeedError(f"guard {g.guard_id}: zone {zid} is not tenant {g.tenant_id}'s")
    guards = {g.guard_id: g.tenant_id for g in reg.guards}
    for d in reg.devices:
        if d.tenant_id not in tenants:
            raise SeedError(f"device {d.device_id}: unknown tenant {d.tenant_id}")
        if d.guard_id is not None and guards.get(d.guard_id) != d.tenant_id:
            raise SeedError(f"device {d.device_id}: guard {d.guard_id} is not in its tenant")
        if d.site_id is not None and sites.get(d.site_id) != d.tenant_id:
            raise SeedError(f"device {d.device_id}: site {d.site_id} is not in its tenant")


# Each upsert is one statement over unnest()ed parameter arrays: no per-row round trips, no
# pipeline mode (which the WebAssembly community-edition server does not support), and the
# registry-version trigger fires once per table. Rows that did not change are not rewritten.


def _upsert_tenants(conn: psycopg.Connection[Any], rows: Sequence[TenantSeed]) -> None:
    conn.execute(
        """
        INSERT INTO tenants (tenant_id, name, auto_register)
        SELECT * FROM unnest(%s::integer[], %s::text[], %s::boolean[])
        ON CONFLICT (tenant_id) DO UPDATE
           SET name = EXCLUDED.name, auto_register = EXCLUDED.auto_register
         WHERE (tenants.name, tenants.auto_register)
               IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.auto_register)
        """,
        (
            [r.tenant_id for r in rows],
            [r.name for r in rows],
            [r.auto_register for r in rows],
        ),
    )


def _upsert_sites(conn: psycopg.Connection[Any], rows: Sequence[SiteSeed]) -> None:
    conn.execute(
        """
        INSERT INTO sites (site_id, tenant_id, name, timezone, lat, lon)
        SELECT * FROM unnest(%s::integer[], %s::integer[], %s::text[], %s::text[],
                             %s::float8[], %s::float8[])
        ON CONFLICT (site_id) DO UPDATE
           SET tenant_id = EXCLUDED.tenant_id, name = EXCLUDED.name,
               timezone = EXCLUDED.timezone, lat = EXCLUDED.lat, lon = EXCLUDED.lon
         WHERE (sites.tenant_id, sites.name, sites.timezone, sites.lat, sites.lon)
               IS DISTINCT FROM
               (EXCLUDED.tenant_id, EXCLUDED.name, EXCLUDED.timezone, EXCLUDED.lat, EXCLUDED.lon)
        """,
        (
            [r.site_id for r in rows],
            [r.tenant_id for r in rows],
            [r.name for r in rows],
            [r.timezone for r in rows],
            [r.lat for r in rows],
            [r.lon for r in rows],
        ),
    )


def _upsert_zones(conn: psycopg.Connection[Any], rows: Sequence[ZoneSeed]) -> None:
    from psycopg.types.json import Jsonb

    geometries = [None if (g := r.geojson()) is None else Jsonb(g) for r in rows]
    conn.execute(
        """
        INSERT INTO zones (zone_id, tenant_id, site_id, name, geometry,
                           center_lat, center_lon, radius_m, active)
        SELECT z.*, true
          FROM unnest(%s::integer[], %s::integer[], %s::integer[], %s::text[], %s::jsonb[],
                      %s::float8[], %s::float8[], %s::float8[])
               AS z(zone_id, tenant_id, site_id, name, geometry, center_lat, center_lon, radius_m)
        ON CONFLICT (zone_id) DO UPDATE
           SET tenant_id = EXCLUDED.tenant_id, site_id = EXCLUDED.site_id, name = EXCLUDED.name,
               geometry = EXCLUDED.geometry, center_lat = EXCLUDED.center_lat,
               center_lon = EXCLUDED.center_lon, radius_m = EXCLUDED.radius_m,
               active = true, updated_at = now()
         WHERE (zones.tenant_id, zones.site_id, zones.name, zones.geometry, zones.center_lat,
                zones.center_lon, zones.radius_m, zones.active)
               IS DISTINCT FROM
               (EXCLUDED.tenant_id, EXCLUDED.site_id, EXCLUDED.name, EXCLUDED.geometry,
                EXCLUDED.center_lat, EXCLUDED.center_lon, EXCLUDED.radius_m, true)
        """,
        (
            [r.zone_id for r in rows],
            [r.tenant_id for r in rows],
            [r.site_id for r in rows],
            [r.name for r in rows],
            geometries,
            [r.center_lat for r in rows],
            [r.center_lon for r in rows],
            [r.radius_m for r in rows],
        ),
    )


def _upsert_guards(conn: psycopg.Connection[Any], rows: Sequence[GuardSeed]) -> None:
    conn.execute(
        """
        INSERT INTO guards (guard_id, tenant_id, site_id, name, on_shift)
        SELECT g.*, true
          FROM unnest(%s::integer[], %s::integer[], %s::integer[], %s::text[])
               AS g(guard_id, tenant_id, site_id, name)
        ON CONFLICT (guard_id) DO UPDATE
           SET tenant_id = EXCLUDED.tenant_id, site_id = EXCLUDED.site_id, name = EXCLUDED.name,
               on_shift = true
         WHERE (guards.tenant_id, guards.site_id, guards.name, guards.on_shift)
               IS DISTINCT FROM (EXCLUDED.tenant_id, EXCLUDED.site_id, EXCLUDED.name, true)
        """,
        (
            [r.guard_id for r in rows],
            [r.tenant_id for r in rows],
            [r.site_id for r in rows],
            [r.name for r in rows],
        ),
    )


def _replace_guard_zones(conn: psycopg.Connection[Any], guards: Sequence[GuardSeed]) -> None:
    """The seeded guards' approvals become exactly the described ones."""
    pairs = [(g.guard_id, z, g.tenant_id) for g in guards for z in g.zone_ids]
    guard_ids = [g.guard_id for g in guards]
    pair_guards = [p[0] for p in pairs]
    pair_zones = [p[1] for p in pairs]
    conn.execute(
        """
        DELETE FROM guard_zones gz
         WHERE gz.guard_id = ANY(%s::integer[])
           AND (gz.guard_id, gz.zone_id) NOT IN (
                SELECT * FROM unnest(%s::integer[], %s::integer[]))
        """,
        (guard_ids, pair_guards, pair_zones),
    )
    conn.execute(
        """
        INSERT INTO guard_zones (guard_id, zone_id, tenant_id)
        SELECT * FROM unnest(%s::integer[], %s::integer[], %s::integer[])
        ON CONFLICT (guard_id, zone_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id
         WHERE guard_zones.tenant_id <> EXCLUDED.tenant_id
        """,
        (pair_guards, pair_zones, [p[2] for p in pairs]),
    )


def _upsert_devices(conn: psycopg.Connection[Any], rows: Sequence[DeviceSeed]) -> None:
    conn.execute(
        """
        INSERT INTO devices (device_id, tenant_id, site_id, guard_id, kind, reporting_interval_s)
        SELECT * FROM unnest(%s::text[], %s::integer[], %s::integer[], %s::integer[],
                             %s::text[], %s::integer[])
        ON CONFLICT (device_id) DO UPDATE
           SET tenant_id = EXCLUDED.tenant_id, site_id = EXCLUDED.site_id,
               guard_id = EXCLUDED.guard_id, kind = EXCLUDED.kind,
               reporting_interval_s = EXCLUDED.reporting_interval_s
         WHERE (devices.tenant_id, devices.site_id, devices.guard_id, devices.kind,
                devices.reporting_interval_s)
               IS DISTINCT FROM
               (EXCLUDED.tenant_id, EXCLUDED.site_id, EXCLUDED.guard_id, EXCLUDED.kind,
                EXCLUDED.reporting_interval_s)
        """,
        (
            [r.device_id for r in rows],
            [r.tenant_id for r in rows],
            [r.site_id for r in rows],
            [r.guard_id for r in rows],
            [r.kind for r in rows],
            [r.reporting_interval_s for r in rows],
        ),
    )


def _upsert_recipients(conn: psycopg.Connection[Any], rows: Sequence[RecipientSeed]) -> None:
    """Recipients have no natural key in the schema: (tenant, name, channel) serves as one."""
    params = (
        [r.tenant_id for r in rows],
        [r.name for r in rows],
        [r.channel for r in rows],
        [r.apprise_url for r in rows],
        [r.tier for r in rows],
    )
    conn.execute(
        """
        UPDATE recipients r
           SET apprise_url = v.apprise_url, tier = v.tier, active = true
          FROM unnest(%s::integer[], %s::text[], %s::text[], %s::text[], %s::integer[])
               AS v(tenant_id, name, channel, apprise_url, tier)
         WHERE r.tenant_id = v.tenant_id AND r.name = v.name AND r.channel = v.channel
           AND (r.apprise_url, r.tier, r.active) IS DISTINCT FROM (v.apprise_url, v.tier, true)
        """,
        params,
    )
    conn.execute(
        """
        INSERT INTO recipients (tenant_id, name, channel, apprise_url, tier)
        SELECT v.*
          FROM unnest(%s::integer[], %s::text[], %s::text[], %s::text[], %s::integer[])
               AS v(tenant_id, name, channel, apprise_url, tier)
         WHERE NOT EXISTS (SELECT 1 FROM recipients r
                            WHERE r.tenant_id = v.tenant_id AND r.name = v.name
                              AND r.channel = v.channel)
        """,
        params,
    )
