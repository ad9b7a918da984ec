"""Attach registry facts (tenant, site, guard, device) to decoded records.

The tenant always comes from the registry. A message from a source the registry does not know
is quarantined as ``unknown_device``; a GPS payload whose ``client_id`` names another tenant
is rejected as ``tenant_mismatch``.
"""

from __future__ import annotations

from operators.decode import dead_letter
from operators.records import (
    SYSTEM_TENANT,
    DataRecord,
    DeadLetter,
    DeviceAlert,
    Enriched,
    Position,
    SensorReading,
    SystemHealth,
    Telemetry,
)
from operators.registry import RegistrySnapshot


def enrich(
    record: DataRecord, topic: str, payload: bytes, registry: RegistrySnapshot
) -> Enriched | DeadLetter:
    """Registry facts for one record, or the dead letter that rejects it. Pure."""
    match record:
        case Position():
            guard = registry.guards.get(record.guard_id)
            if guard is None:
                return _unknown(record, topic, payload, f"guard {record.guard_id}")
            if record.client_id is not None and record.client_id != guard.tenant_id:
                return dead_letter(
                    topic,
                    payload,
                    record.received_at,
                    "tenant_mismatch",
                    f"client_id {record.client_id} disagrees with the registry for guard "
                    f"{record.guard_id}",
                    tenant_id=guard.tenant_id,
                )
            return Enriched(record, guard.tenant_id, guard.site_id, guard.guard_id, guard.device_id)
        case Telemetry() | SensorReading():
            source = record.device_id if isinstance(record, Telemetry) else record.sensor_id
            device = registry.devices.get(source)
            if device is None:
                return _unknown(record, topic, payload, f"device {source!r}")
            return Enriched(
                record, device.tenant_id, device.site_id, device.guard_id, device.device_id
            )
        case DeviceAlert():
            device = registry.devices.get(record.source_id)
            if device is None:
                return _unknown(record, topic, payload, f"device {record.source_id!r}")
            return Enriched(
                record, device.tenant_id, device.site_id, device.guard_id, device.device_id
            )
        case SystemHealth():
            return Enriched(record, SYSTEM_TENANT)
    raise TypeError(f"not a data record: {type(record).__name__}")  # pragma: no cover


def _unknown(record: DataRecord, topic: str, payload: bytes, what: str) -> DeadLetter:
    return dead_letter(
        topic,
        payload,
        record.received_at,
        "unknown_device",
        f"{what} is not in the registry (register it, then republish)",
    )
