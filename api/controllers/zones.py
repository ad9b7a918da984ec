"""``/api/zones``: read for every role; create, replace and delete for admins only.

Every change appends a ``zone`` event (``{"action", "zone_id", "zone"}``) in the same
transaction, and bumps the registry version (database trigger) so the flow reloads zones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.params import FromPath, JSONBody

from api.auth import require_role
from api.dependencies import PoolDep, PrincipalDep
from operators.errors import ConfigError
from operators.geofence import zone_from_geojson
from storage import events, queries


@dataclass(frozen=True)
class ZoneBody:
    """A zone: either ``geometry`` (GeoJSON Polygon / MultiPolygon, lon/lat) or a circle
    (``center_lat``, ``center_lon``, ``radius_m``). ``windows``: approval windows
    ``[{"start": "22:00", "end": "06:00", "weekdays": [0, 1, 2, 3, 4]}]`` (UTC; empty: always)."""

    name: str
    site_id: int | None = None
    geometry: dict[str, Any] | None = None
    center_lat: float | None = None
    center_lon: float | None = None
    radius_m: float | None = None
    windows: list[dict[str, Any]] = field(default_factory=list)
    active: bool = True

    def validated(self, tenant_id: int) -> queries.ZoneInput:
        """The storage input; raises ConfigError (422) naming what is wrong."""
        circle = (self.center_lat, self.center_lon, self.radius_m)
        if self.geometry is not None:
            if any(v is not None for v in circle):
                raise _invalid("give either geometry or center_lat/center_lon/radius_m")
            geometry: dict[str, Any] = self.geometry
            props: dict[str, Any] = {}
        elif all(v is not None for v in circle):
            geometry = {"type": "Point", "coordinates": [self.center_lon, self.center_lat]}
            props = {"radius_m": self.radius_m}
        else:
            raise _invalid("give geometry or all of center_lat, center_lon, radius_m")
        if not self.name.strip():
            raise _invalid("name must not be empty")
        zone_from_geojson(
            {
                "type": "Feature",
                "geometry": geometry,
                "properties": {**props, "zone_id": 0, "tenant_id": tenant_id,
                               "windows": self.windows},
            }
        )  # fmt: skip
        return queries.ZoneInput(
            self.name.strip(), self.site_id, self.geometry, self.center_lat, self.center_lon,
            self.radius_m, self.windows, self.active,
        )  # fmt: skip


def _invalid(message: str) -> ConfigError:
    return ConfigError(message)


_admin = [require_role("admin")]


class ZoneController(Controller):
    path = "/api/zones"
    tags = ("zones",)

    @get(sync_to_thread=True, summary="Zones")
    def list_zones(self, pool: PoolDep, principal: PrincipalDep) -> list[queries.ZoneView]:
        with pool.connection() as conn:
            return queries.list_zones(conn, principal.tenant_id)

    @get("/{zone_id:int}", sync_to_thread=True, summary="One zone")
    def get_zone(
        self, pool: PoolDep, principal: PrincipalDep, zone_id: FromPath[int]
    ) -> queries.ZoneView:
        with pool.connection() as conn:
            return queries.get_zone(conn, principal.tenant_id, zone_id)

    @post(sync_to_thread=True, guards=_admin, summary="Create a zone (admin)")
    def create_zone(
        self, pool: PoolDep, principal: PrincipalDep, data: JSONBody[ZoneBody]
    ) -> queries.ZoneView:
        zone = data.validated(principal.tenant_id)
        with pool.connection() as conn, conn.transaction():
            view = queries.create_zone(conn, principal.tenant_id, zone)
            _zone_event(conn, principal.tenant_id, "created", view.zone_id, view)
        return view

    @put("/{zone_id:int}", sync_to_thread=True, guards=_admin, summary="Replace a zone (admin)")
    def update_zone(
        self,
        pool: PoolDep,
        principal: PrincipalDep,
        zone_id: FromPath[int],
        data: JSONBody[ZoneBody],
    ) -> queries.ZoneView:
        zone = data.validated(principal.tenant_id)
        with pool.connection() as conn, conn.transaction():
            view = queries.update_zone(conn, principal.tenant_id, zone_id, zone)
            _zone_event(conn, principal.tenant_id, "updated", zone_id, view)
        return view

    @delete("/{zone_id:int}", sync_to_thread=True, guards=_admin, summary="Delete a zone (admin)")
    def delete_zone(self, pool: PoolDep, principal: PrincipalDep, zone_id: FromPath[int]) -> None:
        with pool.connection() as conn, conn.transaction():
            queries.delete_zone(conn, principal.tenant_id, zone_id)
            _zone_event(conn, principal.tenant_id, "deleted", zone_id, None)


def _zone_event(
    conn: Any, tenant_id: int, action: str, zone_id: int, view: queries.ZoneView | None
) -> None:
    payload = {"action": action, "zone_id": zone_id, "zone": msgspec.to_builtins(view)}
    with conn.cursor() as cur:
        events.append_events(cur, [events.NewEvent(tenant_id, "zone", payload)])
