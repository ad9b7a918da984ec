"""Zones in the database <-> validated :class:`~operators.geofence.Zone` objects.

Import (``noc zones import FILE.geojson``) validates every feature before writing any, then
upserts them in one transaction with the guards each zone approves.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from operators.errors import ConfigError
from operators.geofence import CircleShape, Zone, zone_from_geojson
from storage.errors import StorageError

log = logging.getLogger(__name__)


class ZoneImportError(StorageError):
    """A zone file cannot be imported; the message names the feature and the problem."""


_COLUMNS = "zone_id, tenant_id, site_id, name, geometry, center_lat, center_lon, radius_m, windows"


def row_to_feature(row: Sequence[Any]) -> dict[str, Any]:
    """A zones row (``_COLUMNS`` order) as the GeoJSON Feature ``zone_from_geojson`` reads."""
    zone_id, tenant_id, site_id, name, geometry, lat, lon, radius, windows = row
    props: dict[str, Any] = {
        "zone_id": zone_id, "tenant_id": tenant_id, "site_id": site_id, "name": name,
        "windows": windows or [],
    }  # fmt: skip
    if geometry is None:
        geometry = {"type": "Point", "coordinates": [lon, lat]}
        props["radius_m"] = radius
    return {"type": "Feature", "geometry": geometry, "properties": props}


def load_zones(conn: psycopg.Connection) -> dict[int, Zone]:
    """Every active zone; a stored zone that no longer validates is logged and left out."""
    zones: dict[int, Zone] = {}
    for row in conn.execute(f"SELECT {_COLUMNS} FROM zones WHERE active"):
        try:
            zone = zone_from_geojson(row_to_feature(row), repair=True)
        except ConfigError as exc:
            log.error("zone %s is invalid and ignored: %s", row[0], exc)
            continue
        zones[zone.zone_id] = zone
    return zones


@dataclass(frozen=True)
class ImportReport:
    """What an import did."""

    created: int
    updated: int
    approvals: int


def parse_collection(doc: Mapping[str, Any], tenant_id: int) -> list[tuple[Zone, dict[str, Any]]]:
    """Validate a FeatureCollection for one tenant; (zone, feature) pairs. Raises one-line errors.

    Each feature needs ``properties.zone_id`` (or ``id``); ``properties.tenant_id`` may be
    omitted (taken from the command line) but must not name another tenant.
    ``properties.guards``: guard ids approved for the zone.
    """
    if not isinstance(doc, Mapping) or doc.get("type") != "FeatureCollection":
        raise ZoneImportError("expected a GeoJSON FeatureCollection")
    features = doc.get("features")
    if not isinstance(features, list) or not features:
        raise ZoneImportError("the FeatureCollection has no features")
    parsed: list[tuple[Zone, dict[str, Any]]] = []
    seen: set[int] = set()
    for i, feature in enumerate(features):
        if not isinstance(feature, Mapping):
            raise ZoneImportError(f"feature {i}: expected an object")
        props = dict(feature.get("properties") or {})
        if props.setdefault("tenant_id", tenant_id) != tenant_id:
            raise ZoneImportError(
                f"feature {i}: tenant_id {props['tenant_id']} is not the tenant being imported"
            )
        guards = props.get("guards", [])
        if not isinstance(guards, list) or not all(
            isinstance(g, int) and not isinstance(g, bool) for g in guards
        ):
            raise ZoneImportError(f"feature {i}: properties.guards must be a list of guard ids")
        try:
            zone = zone_from_geojson({**feature, "properties": props})
        except ConfigError as exc:
            raise ZoneImportError(f"feature {i}: {exc}") from None
        if zone.zone_id in seen:
            raise ZoneImportError(f"feature {i}: zone_id {zone.zone_id} appears twice")
        seen.add(zone.zone_id)
        parsed.append((zone, {**feature, "properties": props}))
    return parsed


def import_zones(conn: psycopg.Connection, tenant_id: int, doc: Mapping[str, Any]) -> ImportReport:
    """Validate, then upsert every zone of ``doc`` and its guard approvals in one transaction."""
    parsed = parse_collection(doc, tenant_id)
    created = updated = approvals = 0
    try:
        with conn.transaction():
            if (
                conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant_id,)).fetchone()
                is None
            ):
                raise ZoneImportError(f"tenant {tenant_id} does not exist")
            for zone, feature in parsed:
                props = feature["properties"]
                owner = conn.execute(
                    "SELECT tenant_id FROM zones WHERE zone_id = %s FOR UPDATE", (zone.zone_id,)
                ).fetchone()
                if owner is not None and owner[0] != tenant_id:
                    raise ZoneImportError(f"zone {zone.zone_id} belongs to another tenant")
                circle = zone.shape if isinstance(zone.shape, CircleShape) else None
                values = (
                    zone.zone_id, tenant_id, zone.site_id, zone.name,
                    None if circle else Jsonb(feature["geometry"]),
                    circle.lat if circle else None, circle.lon if circle else None,
                    circle.radius_m if circle else None, Jsonb(props.get("windows") or []),
                )  # fmt: skip
                conn.execute(
                    f"INSERT INTO zones ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (zone_id) DO UPDATE SET site_id = EXCLUDED.site_id,"
                    " name = EXCLUDED.name, geometry = EXCLUDED.geometry,"
                    " center_lat = EXCLUDED.center_lat, center_lon = EXCLUDED.center_lon,"
                    " radius_m = EXCLUDED.radius_m, windows = EXCLUDED.windows, active = true,"
                    " updated_at = now()",
                    values,
                )
                created += owner is None
                updated += owner is not None
                for guard_id in props.get("guards", []):
                    cur = conn.execute(
                        "INSERT INTO guard_zones (tenant_id, guard_id, zone_id)"
                        " SELECT %s, guard_id, %s FROM guards WHERE guard_id = %s"
                        " AND tenant_id = %s ON CONFLICT DO NOTHING",
                        (tenant_id, zone.zone_id, guard_id, tenant_id),
                    )
                    approvals += cur.rowcount
    except psycopg.Error as exc:
        raise ZoneImportError(f"import failed: {str(exc).strip().splitlines()[0]}") from exc
    return ImportReport(created, updated, approvals)
