"""Device heartbeat: a device that has sent nothing for N of its reporting intervals is offline.

Time semantics: silence is measured in *processing time*. ``heard_at`` is when the flow
received the device's latest message (the record's ``received_at``, stamped by the MQTT source
from the flow's clock) and the device is offline once the flow's clock passes
``heard_at + intervals * reporting_interval_s`` with nothing new. Silence is the absence of
events, so event time cannot measure it (it does not advance without events); and reading the
device's own timestamps would turn a skewed device clock or a backlog the broker replays after
a flow outage into false alarms. The price is that time the flow itself is down does not
count: after a restart a device's silence is measured from the later of its last stored
message and the restart (see :mod:`operators.windows`).

Any message proves the device is alive: late, duplicate or out-of-order messages count, a
message that arrives before the deadline is noticed wins (no alert), and the first message
after an offline alert brings the device back online (the caller resolves the alert).

Pure: time is passed in; the state is a small dataclass.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from noc.domain import SEVERITIES
from operators.errors import ConfigError

__all__ = [
    "ALERT_TYPE",
    "DEFAULT_SEVERITY_BY_KIND",
    "Heartbeat",
    "HeartbeatConfig",
    "HeartbeatEvent",
    "HeartbeatEventKind",
    "HeartbeatState",
]

ALERT_TYPE = "device_offline"

DEFAULT_SEVERITY_BY_KIND: Mapping[str, str] = MappingProxyType(
    {
        # A silent guard device or panic button means a guard the NOC cannot see or hear.
        "guard_device": "high",
        "panic_button": "high",
        # A gateway usually takes a whole site's sensors with it.
        "gateway": "high",
        # One sensor less is a maintenance job, not an emergency.
        "sensor": "medium",
    }
)


@dataclass(frozen=True)
class HeartbeatConfig:
    """``intervals``: reporting intervals of silence before a device is offline
    (settings: ``NOC_OFFLINE_INTERVALS``); severities of the offline alert by device kind."""

    intervals: int = 3
    severity_by_kind: Mapping[str, str] = field(default_factory=lambda: DEFAULT_SEVERITY_BY_KIND)
    default_severity: str = "medium"

    def __post_init__(self) -> None:
        if isinstance(self.intervals, bool) or not isinstance(self.intervals, int):
            raise ConfigError(f"intervals must be an integer, got {self.intervals!r}")
        if self.intervals < 1:
            raise ConfigError("intervals must be >= 1")
        for kind, severity in {**self.severity_by_kind, "(default)": self.default_severity}.items():
            if severity not in SEVERITIES:
                raise ConfigError(f"device kind {kind}: unknown severity {severity!r}")
        object.__setattr__(self, "severity_by_kind", MappingProxyType(dict(self.severity_by_kind)))

    def severity(self, kind: str | None) -> str:
        """Severity of the offline alert of a device of this kind."""
        return self.severity_by_kind.get(kind or "", self.default_severity)

    def build(self, state: HeartbeatState | None = None) -> Heartbeat:
        return Heartbeat(self, state or HeartbeatState())


@dataclass
class HeartbeatState:
    """Primitives only: picklable, and ``Heartbeat.snapshot()`` returns a copy."""

    heard_at: datetime | None = None
    """Processing time of the latest message (None: never heard, so never offline)."""
    last_event: datetime | None = None
    """Latest event time the device reported (for the alert text)."""
    offline_since: datetime | None = None
    """When the device was declared offline (the alert's time); None while online."""


class HeartbeatEventKind(StrEnum):
    OFFLINE = "offline"
    ONLINE = "online"


@dataclass(frozen=True, slots=True)
class HeartbeatEvent:
    """A device went offline (at its deadline) or came back (at the message's receipt)."""

    kind: HeartbeatEventKind
    at: datetime
    heard_at: datetime | None
    last_event: datetime | None
    silent_s: float


class Heartbeat:
    """One device's liveness. ``interval_s`` is passed per call: the registry may change it."""

    def __init__(self, config: HeartbeatConfig, state: HeartbeatState) -> None:
        self.config = config
        self.state = state

    @property
    def offline(self) -> bool:
        return self.state.offline_since is not None

    def heard(self, event_ts: datetime, received_at: datetime) -> HeartbeatEvent | None:
        """A message from the device; returns the ``online`` event if it was offline."""
        s = self.state
        previous = s.heard_at
        if s.heard_at is None or received_at > s.heard_at:
            s.heard_at = received_at
        if s.last_event is None or event_ts > s.last_event:
            s.last_event = event_ts
        if s.offline_since is None:
            return None
        at = max(received_at, s.offline_since)
        silent = (at - previous).total_seconds() if previous is not None else 0.0
        s.offline_since = None
        return HeartbeatEvent(HeartbeatEventKind.ONLINE, at, s.heard_at, s.last_event, silent)

    def due(self, interval_s: float | None) -> datetime | None:
        """When the device will be offline unless heard from (None: nothing to wait for)."""
        s = self.state
        if s.offline_since is not None or s.heard_at is None or not interval_s:
            return None
        return s.heard_at + timedelta(seconds=self.config.intervals * interval_s)

    def check(self, now: datetime, interval_s: float | None) -> HeartbeatEvent | None:
        """The ``offline`` event if the deadline has passed at ``now``."""
        deadline = self.due(interval_s)
        if deadline is None or now < deadline:
            return None
        s = self.state
        s.offline_since = deadline
        assert s.heard_at is not None
        silent = (deadline - s.heard_at).total_seconds()
        return HeartbeatEvent(
            HeartbeatEventKind.OFFLINE, deadline, s.heard_at, s.last_event, silent
        )

    def snapshot(self) -> HeartbeatState:
        return copy.copy(self.state)
