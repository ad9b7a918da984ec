"""An immutable view of the registry, as the flow caches it (loaded by ``storage.registry``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import Protocol

from operators.geofence import Zone


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    device_id: str
    tenant_id: int
    site_id: int | None
    guard_id: int | None
    kind: str
    reporting_interval_s: int = 60


@dataclass(frozen=True, slots=True)
class GuardEntry:
    guard_id: int
    tenant_id: int
    site_id: int | None
    device_id: str | None
    zone_ids: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class SiteEntry:
    site_id: int
    tenant_id: int
    name: str
    timezone: str = "UTC"
    opens_at: time | None = None
    closes_at: time | None = None


class RegistrySource(Protocol):
    """Where steps get the current snapshot (``storage.registry.RegistryCache`` in the flow)."""

    def get(self) -> RegistrySnapshot:
        """The current snapshot. Must be cheap: called for every message."""
        ...

    def refresh_soon(self) -> bool:
        """Look for registry changes now (rate-limited); True if it looked."""
        ...


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """Everything enrichment needs, keyed for O(1) lookups. Never mutated after loading."""

    version: int
    devices: Mapping[str, DeviceEntry] = field(default_factory=dict)
    guards: Mapping[int, GuardEntry] = field(default_factory=dict)
    sites: Mapping[int, SiteEntry] = field(default_factory=dict)
    zones: Mapping[int, Zone] = field(default_factory=dict)
