"""Man-down: a guard on shift who has not moved more than X metres in Y minutes.

Consumes one guard's fixes **in event-time order** (reordered by :mod:`operators.windows`).
The detector keeps an *anchor*: the first fix of the current still period. A fix more than
``radius_m`` from the anchor means the guard moved: the anchor moves to that fix and a raised
``man_down`` is resolved. A fix within ``radius_m`` whose event time is ``still_minutes`` or
more after the anchor raises ``man_down`` (once per still period). So the alert needs fixes
that cover the whole period: a guard whose device stops reporting is the heartbeat's business
(``device_offline``), not a man-down.

Fixes less precise than ``max_accuracy_m`` are ignored (a 300 m fix says nothing about a 25 m
radius). A guard off shift is never alerted: going off shift forgets the anchor and resolves
a raised alert.

Pure: fixes carry their event times and the caller passes the shift status.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from noc.domain import SEVERITIES
from operators.errors import ConfigError
from operators.geo import EARTH_RADIUS_M

__all__ = [
    "ALERT_TYPE",
    "ImmobilityConfig",
    "ImmobilityDetector",
    "ImmobilityEvent",
    "ImmobilityEventKind",
    "ImmobilityState",
    "distance_m",
]

ALERT_TYPE = "man_down"


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (scalar haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(max(h, 0.0), 1.0)))


@dataclass(frozen=True)
class ImmobilityConfig:
    """Settings: ``NOC_MAN_DOWN_RADIUS_M``, ``NOC_MAN_DOWN_MINUTES``."""

    radius_m: float = 25.0
    still_minutes: float = 10.0
    max_accuracy_m: float = 50.0
    severity: str = "high"

    def __post_init__(self) -> None:
        for name in ("radius_m", "still_minutes", "max_accuracy_m"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        if self.severity not in SEVERITIES:
            raise ConfigError(f"severity must be one of {', '.join(SEVERITIES)}")

    @property
    def still(self) -> timedelta:
        return timedelta(minutes=self.still_minutes)

    def build(self, state: ImmobilityState | None = None) -> ImmobilityDetector:
        return ImmobilityDetector(self, state or ImmobilityState())


@dataclass
class ImmobilityState:
    anchor_ts: datetime | None = None
    anchor_lat: float = 0.0
    anchor_lon: float = 0.0
    raised_at: datetime | None = None


class ImmobilityEventKind(StrEnum):
    MAN_DOWN = "man_down"
    MOVED = "moved"
    OFF_SHIFT = "off_shift"


@dataclass(frozen=True, slots=True)
class ImmobilityEvent:
    """``man_down`` raises the alert; ``moved`` / ``off_shift`` resolve it.

    ``since`` is the anchor's time (when the guard stopped moving), ``lat``/``lon`` where."""

    kind: ImmobilityEventKind
    at: datetime
    since: datetime
    lat: float
    lon: float
    moved_m: float


class ImmobilityDetector:
    def __init__(self, config: ImmobilityConfig, state: ImmobilityState) -> None:
        self.config = config
        self.state = state

    @property
    def raised(self) -> bool:
        return self.state.raised_at is not None

    def on_fix(
        self, ts: datetime, lat: float, lon: float, accuracy: float | None, on_shift: bool
    ) -> ImmobilityEvent | None:
        if not on_shift:
            return self.off_shift(ts)
        if accuracy is not None and accuracy > self.config.max_accuracy_m:
            return None
        s = self.state
        if s.anchor_ts is None:
            s.anchor_ts, s.anchor_lat, s.anchor_lon = ts, lat, lon
            return None
        moved = distance_m(s.anchor_lat, s.anchor_lon, lat, lon)
        if moved > self.config.radius_m:
            event = None
            if s.raised_at is not None:
                event = ImmobilityEvent(
                    ImmobilityEventKind.MOVED, ts, s.anchor_ts, lat, lon, round(moved, 1)
                )
            s.anchor_ts, s.anchor_lat, s.anchor_lon, s.raised_at = ts, lat, lon, None
            return event
        if s.raised_at is None and ts - s.anchor_ts >= self.config.still:
            s.raised_at = ts
            return ImmobilityEvent(
                ImmobilityEventKind.MAN_DOWN, ts, s.anchor_ts, s.anchor_lat, s.anchor_lon,
                round(moved, 1),
            )  # fmt: skip
        return None

    def off_shift(self, at: datetime) -> ImmobilityEvent | None:
        """The guard is off shift: forget the still period; resolve a raised alert."""
        s = self.state
        event = None
        if s.raised_at is not None:
            since = s.anchor_ts or s.raised_at
            event = ImmobilityEvent(
                ImmobilityEventKind.OFF_SHIFT, at, since, s.anchor_lat, s.anchor_lon, 0.0
            )
        s.anchor_ts, s.raised_at = None, None
        return event

    def snapshot(self) -> ImmobilityState:
        return copy.copy(self.state)
