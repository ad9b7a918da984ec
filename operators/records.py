"""Typed records that flow from the decoder to storage.

Each inbound message becomes exactly one record: a data record (telemetry, position, sensor
reading, device alert, system health) or a :class:`DeadLetter` with a reason. ``msg_id`` is the
message's own identity (the device's ``message_id`` or a hash of topic and payload), used with
the event time as the idempotency key in storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeGuard


@dataclass(frozen=True, slots=True)
class Telemetry:
    device_id: str
    ts: datetime
    battery: float | None
    signal: float | None
    temperature: float | None
    msg_id: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Position:
    guard_id: int
    ts: datetime
    lat: float
    lon: float
    accuracy: float | None
    client_id: int | None
    msg_id: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class SensorReading:
    sensor_id: str
    kind: str
    ts: datetime
    value: float | None
    state: str | None
    msg_id: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class DeviceAlert:
    source_id: str
    alert_type: str
    ts: datetime
    severity: str | None
    message: str
    lat: float | None
    lon: float | None
    msg_id: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class SystemHealth:
    component: str
    ts: datetime
    payload: dict[str, Any]
    msg_id: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that cannot be stored as data, with the reason (never silently dropped)."""

    topic: str
    reason: str
    detail: str
    payload_head: bytes
    payload_size: int
    msg_id: str
    received_at: datetime
    tenant_id: int = 0


DataRecord = Telemetry | Position | SensorReading | DeviceAlert | SystemHealth
Record = DataRecord | DeadLetter

SYSTEM_TENANT = 0


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    """An alert the rules want raised; storage folds repeats into the one open alert."""

    tenant_id: int
    source_id: str
    alert_type: str
    severity: str
    message: str
    ts: datetime
    site_id: int | None = None
    guard_id: int | None = None
    device_id: str | None = None
    lat: float | None = None
    lon: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


class AlertSubject(Protocol):
    """Whatever an alert is about: a record's registry facts, or a watched device."""

    @property
    def tenant_id(self) -> int: ...
    @property
    def site_id(self) -> int | None: ...
    @property
    def guard_id(self) -> int | None: ...
    @property
    def device_id(self) -> str | None: ...


def alert_for(
    subject: AlertSubject,
    source_id: str,
    alert_type: str,
    severity: str,
    message: str,
    ts: datetime,
    lat: float | None = None,
    lon: float | None = None,
    details: dict[str, Any] | None = None,
) -> AlertCandidate:
    """An alert candidate carrying the subject's tenant, site, guard and device."""
    return AlertCandidate(
        tenant_id=subject.tenant_id,
        source_id=source_id,
        alert_type=alert_type,
        severity=severity,
        message=message,
        ts=ts,
        site_id=subject.site_id,
        guard_id=subject.guard_id,
        device_id=subject.device_id,
        lat=lat,
        lon=lon,
        details=details or {},
    )


@dataclass(frozen=True, slots=True)
class AlertResolution:
    """The condition behind an open alert has ended (guard back inside, device back online):
    storage resolves the open alert of (tenant, source, type), as ``system``, if there is one."""

    tenant_id: int
    source_id: str
    alert_type: str
    ts: datetime
    note: str


@dataclass(frozen=True, slots=True)
class DeviceCommand:
    """A message for a device's command topic (QoS 1), sent after the batch commits."""

    device_id: str
    payload: dict[str, Any]


@dataclass(slots=True)
class Enriched:
    """A data record with what the registry says about its source.

    ``zone_*`` are filled by the geofence step for positions; ``alerts``, ``resolutions`` and
    ``commands`` by the rules. Storage writes the record and, only if it was new, applies its
    alerts and resolutions and sends its commands.
    """

    record: DataRecord
    tenant_id: int
    site_id: int | None = None
    guard_id: int | None = None
    device_id: str | None = None
    zone_status: str = "unzoned"
    zone_id: int | None = None
    zone_distance_m: float | None = None
    alerts: list[AlertCandidate] = field(default_factory=list)
    resolutions: list[AlertResolution] = field(default_factory=list)
    commands: list[DeviceCommand] = field(default_factory=list)


@dataclass(slots=True)
class DerivedAlerts:
    """Alert changes decided by time rather than by one stored message (a device went silent,
    a trend crossed a threshold). Storage applies them as they are; after a restart a re-raised
    alert folds into the one open alert instead of creating a second one."""

    tenant_id: int
    alerts: list[AlertCandidate] = field(default_factory=list)
    resolutions: list[AlertResolution] = field(default_factory=list)
    commands: list[DeviceCommand] = field(default_factory=list)


Stored = Enriched | DeadLetter | DerivedAlerts


def changes_alerts(item: Stored) -> TypeGuard[Enriched | DerivedAlerts]:
    """Whether storing ``item`` changes alerts or commands a device: derived alerts, or an
    enriched record carrying alert candidates, resolutions or device commands."""
    if isinstance(item, DerivedAlerts):
        return True
    return isinstance(item, Enriched) and bool(item.alerts or item.resolutions or item.commands)
