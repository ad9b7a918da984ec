"""Load the registry into an immutable snapshot, and keep a cached one fresh."""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Callable

import psycopg

from operators.registry import DeviceEntry, GuardEntry, RegistrySnapshot, SiteEntry
from storage.db import connect
from storage.errors import DatabaseUnavailable
from storage.zones import load_zones

log = logging.getLogger(__name__)


def registry_version(conn: psycopg.Connection) -> int:
    """The counter bumped by every registry change."""
    row = conn.execute("SELECT version FROM registry_version").fetchone()
    return int(row[0]) if row else 0


def load_registry(conn: psycopg.Connection) -> RegistrySnapshot:
    """Read devices, guards (with approved zones) and sites in one snapshot transaction."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        version = registry_version(conn)
        devices = {
            r[0]: DeviceEntry(r[0], r[1], r[2], r[3], r[4], r[5])
            for r in conn.execute(
                "SELECT device_id, tenant_id, site_id, guard_id, kind, reporting_interval_s"
                " FROM devices"
            )
        }
        guard_device: dict[int, str] = {}
        for d in sorted(devices.values(), key=lambda d: d.device_id):
            if d.guard_id is not None and d.kind == "guard_device":
                guard_device.setdefault(d.guard_id, d.device_id)
        zones: dict[int, set[int]] = {}
        for guard_id, zone_id in conn.execute(
            "SELECT gz.guard_id, gz.zone_id FROM guard_zones gz"
            " JOIN zones z ON z.zone_id = gz.zone_id AND z.tenant_id = gz.tenant_id"
            " WHERE z.active"
        ):
            zones.setdefault(guard_id, set()).add(zone_id)
        guards = {
            r[0]: GuardEntry(
                r[0], r[1], r[2], guard_device.get(r[0]), frozenset(zones.get(r[0], ()))
            )
            for r in conn.execute("SELECT guard_id, tenant_id, site_id FROM guards")
        }
        sites = {
            r[0]: SiteEntry(r[0], r[1], r[2], r[3], r[4], r[5])
            for r in conn.execute(
                "SELECT site_id, tenant_id, name, timezone, opens_at, closes_at FROM sites"
            )
        }
        zone_map = load_zones(conn)
    return RegistrySnapshot(
        version=version, devices=devices, guards=guards, sites=sites, zones=zone_map
    )


class RegistryCache:
    """A registry snapshot refreshed when the database says it changed.

    ``get()`` checks the version at most every ``refresh_s`` seconds; ``refresh_soon()`` lets
    a miss (an unknown device) trigger an early check, at most once per second. When the
    database is unreachable the last snapshot stays in use. Not thread-safe: one per worker.
    """

    def __init__(
        self,
        url: str,
        refresh_s: float,
        monotonic: Callable[[], float] = _time.monotonic,
    ) -> None:
        self._url = url
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._conn: psycopg.Connection | None = None
        self._snapshot: RegistrySnapshot | None = None
        self._next_check = 0.0
        self._last_forced = -1e9

    def get(self) -> RegistrySnapshot:
        """The current snapshot; blocks (retrying) only until the first load succeeds."""
        now = self._monotonic()
        if self._snapshot is None or now >= self._next_check:
            self._check()
        while self._snapshot is None:
            _time.sleep(1.0)
            self._check()
        return self._snapshot

    def refresh_soon(self) -> bool:
        """Check for changes now unless checked in the last second; True if it checked."""
        now = self._monotonic()
        if now - self._last_forced < 1.0:
            return False
        self._last_forced = now
        self._check()
        return True

    def _check(self) -> None:
        self._next_check = self._monotonic() + self._refresh_s
        try:
            conn = self._connection()
            if self._snapshot is None or registry_version(conn) != self._snapshot.version:
                self._snapshot = load_registry(conn)
                log.info(
                    "registry loaded: version %d, %d devices, %d guards",
                    self._snapshot.version,
                    len(self._snapshot.devices),
                    len(self._snapshot.guards),
                )
        except (psycopg.Error, DatabaseUnavailable) as exc:
            log.warning("registry refresh failed, keeping the last snapshot: %s", exc)
            self._drop_connection()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url, autocommit=True, application_name="noc-registry")
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._drop_connection()
