"""What confirmed geofence events mean for the NOC: alerts, resolutions, device warnings.

Pure. A ``violation`` opens (or folds into) the guard's ``geofence_violation`` alert and sends
the guard's device a warning; ``back_inside`` resolves that alert. ``enter``/``exit`` of single
zones are recorded in the position rows' zone fields, not alerted.
"""

from __future__ import annotations

from dataclasses import dataclass

from noc.domain import SEVERITIES
from operators.errors import ConfigError
from operators.geofence_hysteresis import FenceEvent, FenceEventKind
from operators.records import (
    AlertCandidate,
    AlertResolution,
    DeviceCommand,
    Enriched,
    alert_for,
)

ALERT_TYPE = "geofence_violation"
WARNING_TEXT = "You are outside your approved zone. Return or call the NOC."


def guard_source(guard_id: int) -> str:
    """The alert source id of a guard (alerts are per guard, not per device)."""
    return f"guard:{guard_id}"


@dataclass(frozen=True)
class FenceAlertConfig:
    """Severity of a violation alert (settings: ``NOC_GEOFENCE_SEVERITY``)."""

    severity: str = "critical"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ConfigError(f"geofence severity must be one of {', '.join(SEVERITIES)}")


@dataclass
class FenceActions:
    alerts: list[AlertCandidate]
    resolutions: list[AlertResolution]
    commands: list[DeviceCommand]


def fence_actions(
    item: Enriched, events: list[FenceEvent], config: FenceAlertConfig
) -> FenceActions:
    """Alerts, resolutions and device commands for a position's confirmed events."""
    actions = FenceActions([], [], [])
    record = item.record
    lat = getattr(record, "lat", None)
    lon = getattr(record, "lon", None)
    for event in events:
        source = guard_source(event.guard_id)
        distance = None if event.distance_m is None else round(event.distance_m, 1)
        if event.kind is FenceEventKind.VIOLATION:
            outside = f"{abs(distance):.0f} m outside" if distance is not None else "outside"
            zone = f"zone {event.zone_id}" if event.zone_id is not None else "any approved zone"
            actions.alerts.append(
                alert_for(
                    item,
                    source,
                    ALERT_TYPE,
                    config.severity,
                    f"Guard {event.guard_id} left approved zones ({outside} {zone})",
                    event.time,
                    lat,
                    lon,
                    {"zone_id": event.zone_id, "distance_m": distance},
                )
            )
            if item.device_id is not None:
                actions.commands.append(
                    DeviceCommand(
                        item.device_id,
                        {
                            "type": "geofence_warning",
                            "guard_id": event.guard_id,
                            "zone_id": event.zone_id,
                            "distance_m": distance,
                            "at": event.time.isoformat(),
                            "message": WARNING_TEXT,
                        },
                    )
                )
        elif event.kind is FenceEventKind.BACK_INSIDE:
            actions.resolutions.append(
                AlertResolution(
                    item.tenant_id,
                    source,
                    ALERT_TYPE,
                    event.time,
                    f"guard back inside zone {event.zone_id}",
                )
            )
    return actions
