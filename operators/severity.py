"""Severity rules: turn readings into alert candidates (DESIGN.md §4.3).

Rules are data (:class:`SeverityConfig`, overridable per tenant); :class:`SeverityRules`
applies them to one enriched record at a time. Pure: the site's opening hours come from the
registry snapshot and time from the record's event timestamp.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from noc.domain import SEVERITIES
from operators.errors import ConfigError
from operators.records import (
    AlertCandidate,
    DeviceAlert,
    Enriched,
    SensorReading,
    Telemetry,
    alert_for,
)
from operators.registry import SiteEntry

_THRESHOLDS = ("battery_high_below", "battery_medium_below", "temperature_high_above",
               "temperature_low_below")  # fmt: skip

_DEFAULT_TYPES: Mapping[str, str] = MappingProxyType(
    {"panic": "critical", "duress": "critical", "fire": "critical", "man_down": "high",
     "fall": "high", "tamper": "high", "low_battery": "medium", "test": "info"}
)  # fmt: skip


@dataclass(frozen=True)
class SeverityConfig:
    """The rule table. Thresholds are inclusive-exclusive as named (``below`` means <)."""

    alert_type_severity: Mapping[str, str] = field(default_factory=lambda: _DEFAULT_TYPES)
    unknown_alert_type_severity: str = "high"
    honour_device_severity: bool = True
    battery_high_below: float = 10.0
    battery_medium_below: float = 20.0
    temperature_high_above: float = 60.0
    temperature_low_below: float = -20.0
    temperature_severity: str = "high"
    smoke_severity: str = "critical"
    door_after_hours_severity: str = "high"

    def __post_init__(self) -> None:
        for name in ("unknown_alert_type_severity", "temperature_severity", "smoke_severity",
                     "door_after_hours_severity"):  # fmt: skip
            if getattr(self, name) not in SEVERITIES:
                raise ConfigError(f"{name} must be one of {', '.join(SEVERITIES)}")
        for name in _THRESHOLDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be finite, got {value!r}")
        if not isinstance(self.honour_device_severity, bool):
            raise ConfigError("honour_device_severity must be true or false")
        if not isinstance(self.alert_type_severity, Mapping):
            raise ConfigError("alert_type_severity must map alert types to severities")
        object.__setattr__(
            self, "alert_type_severity", MappingProxyType(dict(self.alert_type_severity))
        )
        for alert_type, severity in self.alert_type_severity.items():
            if severity not in SEVERITIES:
                raise ConfigError(f"alert type {alert_type!r}: unknown severity {severity!r}")
        if not self.battery_high_below <= self.battery_medium_below:
            raise ConfigError("battery_high_below must be <= battery_medium_below")
        if not self.temperature_low_below < self.temperature_high_above:
            raise ConfigError("temperature_low_below must be < temperature_high_above")

    def with_overrides(self, overrides: Mapping[str, Any]) -> SeverityConfig:
        """A copy with a tenant's overrides applied (validated like the defaults)."""
        known = set(self.__dataclass_fields__)
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown severity rule setting(s): {', '.join(sorted(unknown))}")
        values = dict(overrides)
        if "alert_type_severity" in values:
            if not isinstance(values["alert_type_severity"], Mapping):
                raise ConfigError("alert_type_severity must map alert types to severities")
            values["alert_type_severity"] = {
                **self.alert_type_severity,
                **values["alert_type_severity"],
            }
        return replace(self, **values)

    def build(self) -> SeverityRules:
        return SeverityRules(self)


class SeverityRules:
    """Applies a :class:`SeverityConfig`. Stateless; safe to share."""

    def __init__(self, config: SeverityConfig) -> None:
        self.config = config

    def evaluate(self, item: Enriched, site: SiteEntry | None = None) -> list[AlertCandidate]:
        """Alert candidates for one record (usually none)."""
        r = item.record
        match r:
            case DeviceAlert():
                return [self._device_alert(item, r)]
            case SensorReading():
                return self._sensor(item, r, site)
            case Telemetry():
                return self._telemetry(item, r)
        return []

    def _device_alert(self, item: Enriched, r: DeviceAlert) -> AlertCandidate:
        c = self.config
        severity = c.alert_type_severity.get(r.alert_type, c.unknown_alert_type_severity)
        if c.honour_device_severity and r.severity in SEVERITIES:
            # A device may raise the severity, never lower a type's configured level.
            if SEVERITIES.index(r.severity) < SEVERITIES.index(severity):
                severity = r.severity
        message = r.message or f"{r.alert_type.replace('_', ' ')} from {r.source_id}"
        return alert_for(item, r.source_id, r.alert_type, severity, message, r.ts,
                               r.lat, r.lon)  # fmt: skip

    def _sensor(
        self, item: Enriched, r: SensorReading, site: SiteEntry | None
    ) -> list[AlertCandidate]:
        c = self.config
        state = r.state.strip().lower() if r.state is not None else None
        if r.kind == "smoke" and (_truthy(r.value) or state in {"alarm", "smoke", "detected"}):
            return [alert_for(item, r.sensor_id, "smoke", c.smoke_severity,
                                    f"Smoke detected by {r.sensor_id}", r.ts)]  # fmt: skip
        if r.kind == "temperature" and r.value is not None:
            if r.value > c.temperature_high_above or r.value < c.temperature_low_below:
                return [alert_for(
                    item, r.sensor_id, "temperature_out_of_range", c.temperature_severity,
                    f"Temperature {r.value:g} °C at {r.sensor_id}", r.ts,
                    details={"value": r.value})]  # fmt: skip
        if r.kind == "door" and (state == "open" or (state is None and _truthy(r.value))):
            if site is not None and not is_open(site, r.ts):
                return [alert_for(
                    item, r.sensor_id, "door_after_hours", c.door_after_hours_severity,
                    f"Door {r.sensor_id} opened outside site hours", r.ts)]  # fmt: skip
        return []

    def _telemetry(self, item: Enriched, r: Telemetry) -> list[AlertCandidate]:
        c = self.config
        found: list[AlertCandidate] = []
        if r.battery is not None and r.battery < c.battery_medium_below:
            severity = "high" if r.battery < c.battery_high_below else "medium"
            found.append(alert_for(
                item, r.device_id, "low_battery", severity,
                f"Battery {r.battery:g}% on {r.device_id}", r.ts,
                details={"battery": r.battery}))  # fmt: skip
        if r.temperature is not None and (
            r.temperature > c.temperature_high_above or r.temperature < c.temperature_low_below
        ):
            found.append(alert_for(
                item, r.device_id, "device_temperature", c.temperature_severity,
                f"Device temperature {r.temperature:g} °C on {r.device_id}", r.ts,
                details={"temperature": r.temperature}))  # fmt: skip
        return found


def _truthy(value: float | None) -> bool:
    return value is not None and value != 0


def is_open(site: SiteEntry, at: datetime) -> bool:
    """Whether the site is within its opening hours at ``at``, in the site's time zone.

    No hours, or opening and closing at the same time, means open around the clock. Hours
    may wrap past midnight (22:00-06:00). An unknown time zone is taken as UTC.
    """
    if site.opens_at is None or site.closes_at is None or site.opens_at == site.closes_at:
        return True
    try:
        zone = ZoneInfo(site.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = at.astimezone(zone).time().replace(tzinfo=None)
    return _within(local, site.opens_at, site.closes_at)


def _within(t: time, start: time, end: time) -> bool:
    if start <= end:
        return start <= t < end
    return t >= start or t < end  # window wraps past midnight
