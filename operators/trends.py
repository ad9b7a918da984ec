"""Telemetry trends: a battery draining too fast, a temperature that stays too high.

Both detectors consume one device's readings **in event-time order** (the caller,
:mod:`operators.windows`, reorders within the allowed lateness before releasing them here),
so feeding the same readings in any order that the caller accepts gives the same events.

Battery drain
    A sliding event-time window of ``battery_window_s`` (at least 10 minutes) ending at the
    latest reading. The drain rate is the slope of battery % over time (Tukey's resistant
    line: medians of the first and last thirds of the window), in percentage points per hour,
    computed once the window holds ``battery_min_samples`` readings spanning at least
    ``battery_min_span_s``. A rate at or above
    ``battery_drain_per_hour`` raises ``battery_drain``; it clears once the rate falls below
    ``battery_clear_ratio`` times the threshold (a little hysteresis, so a rate hovering at the
    threshold does not flap), or the battery charges. Medians, not first/last or least
    squares: a single mis-read sample at the edge of the window would tilt either of those
    past the threshold. The rate costs O(n log n) for the n readings of the window, so it is
    computed at most once per ``battery_eval_s`` of event time (a device reporting every
    second holds 900 readings; computing the rate for each of them would cost more than
    everything else the flow does with the message).

Sustained temperature
    ``temperature_sustained`` is raised when readings have stayed above ``temperature_high``
    for at least ``temperature_sustained_s``, measured from the first reading of the run to
    the current one (so one spike, however high, never raises it; at least two readings do).
    The first reading at or below the threshold ends the run and clears the alert.

Pure: readings carry their event times; the state is a small dataclass.
"""

from __future__ import annotations

import bisect
import copy
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from noc.domain import SEVERITIES
from operators.errors import ConfigError

__all__ = [
    "BATTERY_DRAIN",
    "MIN_BATTERY_WINDOW_S",
    "TEMPERATURE_SUSTAINED",
    "BatteryState",
    "TemperatureState",
    "TrendConfig",
    "TrendEvent",
    "TrendState",
    "Trends",
    "drain_per_hour",
]

BATTERY_DRAIN = "battery_drain"
TEMPERATURE_SUSTAINED = "temperature_sustained"
MIN_BATTERY_WINDOW_S = 600.0


_NUMBERS = ("battery_drain_per_hour", "battery_window_s", "battery_min_span_s",
            "battery_clear_ratio", "battery_eval_s", "temperature_high",
            "temperature_sustained_s")  # fmt: skip


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class TrendConfig:
    """Thresholds of the trend detectors (settings: ``NOC_BATTERY_*``, ``NOC_TEMPERATURE_*``)."""

    battery_drain_per_hour: float = 20.0
    battery_window_s: float = 900.0
    battery_min_span_s: float = 600.0
    battery_min_samples: int = 3
    battery_clear_ratio: float = 0.8
    battery_eval_s: float = 15.0
    battery_severity: str = "medium"
    temperature_high: float = 50.0
    temperature_sustained_s: float = 300.0
    temperature_severity: str = "high"

    def __post_init__(self) -> None:
        for name in _NUMBERS:
            _number(name, getattr(self, name))
        if self.battery_drain_per_hour <= 0:
            raise ConfigError("battery_drain_per_hour must be > 0")
        if self.battery_window_s < MIN_BATTERY_WINDOW_S:
            raise ConfigError(
                f"battery_window_s must be >= {MIN_BATTERY_WINDOW_S:g} s: shorter windows turn "
                "the 1 % steps of battery readings into drain alarms"
            )
        if not 0 < self.battery_min_span_s <= self.battery_window_s:
            raise ConfigError("battery_min_span_s must be > 0 and <= battery_window_s")
        if not 0 <= self.battery_eval_s <= self.battery_window_s:
            raise ConfigError("battery_eval_s must be >= 0 and <= battery_window_s")
        if isinstance(self.battery_min_samples, bool) or not isinstance(
            self.battery_min_samples, int
        ):
            raise ConfigError("battery_min_samples must be an integer")
        if self.battery_min_samples < 2:
            raise ConfigError("battery_min_samples must be >= 2")
        if not 0 < self.battery_clear_ratio <= 1:
            raise ConfigError("battery_clear_ratio must be in (0, 1]")
        if self.temperature_sustained_s <= 0:
            raise ConfigError("temperature_sustained_s must be > 0")
        for name in ("battery_severity", "temperature_severity"):
            if getattr(self, name) not in SEVERITIES:
                raise ConfigError(f"{name} must be one of {', '.join(SEVERITIES)}")

    def build(self, state: TrendState | None = None) -> Trends:
        return Trends(self, state or TrendState())


@dataclass
class BatteryState:
    samples: list[tuple[datetime, float]] = field(default_factory=list)
    """Readings of the window, oldest first (immutable tuples: a copy of the list suffices)."""
    raised_at: datetime | None = None
    evaluated_at: datetime | None = None
    """Event time of the reading at which the rate was last computed."""

    def copy(self) -> BatteryState:
        """An independent copy, O(samples) without copying the immutable samples."""
        return BatteryState(list(self.samples), self.raised_at, self.evaluated_at)


@dataclass
class TemperatureState:
    above_since: datetime | None = None
    """Event time of the first reading of the current run above the threshold."""
    peak: float | None = None
    raised_at: datetime | None = None


@dataclass
class TrendState:
    battery: BatteryState = field(default_factory=BatteryState)
    temperature: TemperatureState = field(default_factory=TemperatureState)

    def copy(self) -> TrendState:
        """An independent copy (no field is shared with this state)."""
        return TrendState(self.battery.copy(), copy.copy(self.temperature))


@dataclass(frozen=True, slots=True)
class TrendEvent:
    """``raised`` True: the condition started (alert); False: it ended (resolution).

    ``at`` is the event time of the reading that decided it; ``since`` when the episode began:
    for a drain the reading at which the rate crossed the threshold, for a temperature the
    first reading of the run above the threshold. A resolution carries its episode's
    ``since``."""

    alert_type: str
    raised: bool
    at: datetime
    since: datetime
    value: float
    details: dict[str, Any]


def drain_per_hour(samples: list[tuple[datetime, float]]) -> float:
    """Drain in percentage points per hour (negative: charging), as the slope of Tukey's
    resistant line: from the medians (time and value) of the first third of the readings to
    those of the last third. A glitch or two (a voltage sag while transmitting) moves a median
    little, where it would tilt a least-squares line; O(n log n)."""
    n = len(samples)
    k = max(n // 3, 1)
    t0 = samples[0][0]
    left, right = samples[:k], samples[n - k :]
    dx = _median([(t - t0).total_seconds() for t, _ in right]) - _median(
        [(t - t0).total_seconds() for t, _ in left]
    )
    if dx <= 0:
        return 0.0
    dy = _median([v for _, v in right]) - _median([v for _, v in left])
    return -dy / dx * 3600.0


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class Trends:
    """Both detectors of one device; feed readings in event-time order."""

    def __init__(self, config: TrendConfig, state: TrendState) -> None:
        self.config = config
        self.state = state
        self._window = timedelta(seconds=config.battery_window_s)
        self._min_span = timedelta(seconds=config.battery_min_span_s)
        self._eval = timedelta(seconds=config.battery_eval_s)

    def battery(self, ts: datetime, value: float) -> TrendEvent | None:
        c, b = self.config, self.state.battery
        samples = b.samples
        samples.append((ts, value))
        start = ts - self._window
        if samples[0][0] < start:
            del samples[: bisect.bisect_left(samples, (start,))]
        if len(samples) < c.battery_min_samples or ts - samples[0][0] < self._min_span:
            return None
        if b.evaluated_at is not None and ts - b.evaluated_at < self._eval:
            return None
        b.evaluated_at = ts
        rate = drain_per_hour(samples)
        details = {
            "drain_per_hour": round(rate, 2),
            "threshold_per_hour": c.battery_drain_per_hour,
            "window_s": c.battery_window_s,
            "battery": value,
            "samples": len(b.samples),
            "window_start": b.samples[0][0].isoformat(),
        }
        if b.raised_at is None and rate >= c.battery_drain_per_hour:
            b.raised_at = ts
            return TrendEvent(BATTERY_DRAIN, True, ts, ts, rate, details)
        if b.raised_at is not None and rate < c.battery_drain_per_hour * c.battery_clear_ratio:
            since = b.raised_at
            b.raised_at = None
            return TrendEvent(BATTERY_DRAIN, False, ts, since, rate, details)
        return None

    def temperature(self, ts: datetime, value: float) -> TrendEvent | None:
        c, t = self.config, self.state.temperature
        if value > c.temperature_high:
            if t.above_since is None:
                t.above_since, t.peak = ts, value
            t.peak = value if t.peak is None else max(t.peak, value)
            lasted = (ts - t.above_since).total_seconds()
            if t.raised_at is None and lasted >= c.temperature_sustained_s:
                t.raised_at = ts
                details = {"threshold": c.temperature_high, "above_s": lasted, "peak": t.peak,
                           "temperature": value}  # fmt: skip
                return TrendEvent(TEMPERATURE_SUSTAINED, True, ts, t.above_since, value, details)
            return None
        since = t.above_since
        t.above_since, t.peak = None, None
        if t.raised_at is None:
            return None
        t.raised_at = None
        details = {"threshold": c.temperature_high, "temperature": value}
        return TrendEvent(TEMPERATURE_SUSTAINED, False, ts, since or ts, value, details)

    def snapshot(self) -> TrendState:
        return self.state.copy()
