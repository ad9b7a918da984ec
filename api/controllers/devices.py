"""``/api/devices``: devices with last-seen time and online status."""

from __future__ import annotations

from litestar import Controller, get

from api.dependencies import PoolDep, PrincipalDep
from storage import queries


class DeviceController(Controller):
    path = "/api/devices"
    tags = ("devices",)

    @get(sync_to_thread=True, summary="Devices with status (online | offline | never)")
    def list_devices(self, pool: PoolDep, principal: PrincipalDep) -> list[queries.DeviceView]:
        with pool.connection() as conn:
            return queries.list_devices(conn, principal.tenant_id)
