"""Per-guard geofence hysteresis: turn noisy per-fix answers into confirmed events.

:class:`GeofenceConfig` builds one :class:`GeofenceTracker` per guard (a Bytewax keyed-state
logic). Its state, :class:`GuardFenceState`, is a plain dataclass of primitives; ``snapshot()``
returns a copy, ``GeofenceConfig.build(guard_id, state)`` resumes from one, and
``to_dict``/``from_dict`` give a JSON form.

Rules (``K``/``T`` are ``confirm_fixes``/``confirm_seconds`` for leaving, ``clear_fixes``/
``clear_seconds`` for coming back; both default to the same values):

- A state change is confirmed by ``K`` consecutive confident fixes of the new state whose
  event times span at least ``T`` seconds (first to last), i.e. K fixes AND T seconds.
- ``uncertain`` fixes neither confirm nor reset a streak; a confident fix of the current
  state resets it.
- Guard level: confirmed ``outside`` (from ``inside`` or from the start) emits ``violation``;
  confirmed ``inside`` after a violation emits ``back_inside``. The first confirmation of
  ``inside`` emits nothing.
- Zone level (``zone_events``): a zone is confidently inside when its signed distance is
  ``>= accuracy`` and confidently outside when it is ``< -accuracy`` or it is absent from the
  fix's evaluated zones (:class:`~operators.geofence.FixResult`); confirmed entry emits
  ``enter``, confirmed leaving after an entry emits ``exit``.
- Events of one fix come in the order: ``exit`` s, ``violation``/``back_inside``, ``enter`` s.
- Fixes whose event time is not after the last processed fix of the guard (late or
  duplicate deliveries, replays after a restart) are ignored, so restoring a snapshot and
  replaying the input neither loses nor repeats an event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from operators.errors import ConfigError
from operators.geofence import Classification, FixResult

__all__ = [
    "Debounce",
    "FenceEvent",
    "FenceEventKind",
    "GeofenceConfig",
    "GeofenceTracker",
    "GuardFenceState",
]

INSIDE = "inside"
OUTSIDE = "outside"
UNKNOWN = "unknown"


class FenceEventKind(StrEnum):
    """Kinds of confirmed geofence events."""

    VIOLATION = "violation"
    BACK_INSIDE = "back_inside"
    ENTER = "enter"
    EXIT = "exit"


@dataclass(frozen=True, slots=True)
class FenceEvent:
    """A confirmed geofence event, stamped with the event time of the confirming fix.

    ``zone_id``: for ``violation`` the nearest approved zone, for ``back_inside`` the zone the
    guard is deepest in, for ``enter``/``exit`` the zone itself. ``distance_m`` is the signed
    distance to that zone (positive inside); ``None`` when unknown (no approved zone, or the
    zone was not evaluated because it is more than the accuracy away).
    """

    kind: FenceEventKind
    guard_id: int
    zone_id: int | None
    distance_m: float | None
    time: datetime


@dataclass
class Debounce:
    """Confirmed state (``inside``/``outside``/``unknown``) and the streak towards a change."""

    confirmed: str = UNKNOWN
    pending: str | None = None
    count: int = 0
    since_us: int = 0

    def observe(self, obs: str | None, at_us: int, fixes: int, span_us: int) -> bool:
        """Feed one observation; return whether ``confirmed`` changed to ``obs``."""
        if obs is None:
            return False
        if obs == self.confirmed:
            self.pending, self.count, self.since_us = None, 0, 0
            return False
        if self.pending != obs:
            self.pending, self.count, self.since_us = obs, 0, at_us
        self.count += 1
        if self.count >= fixes and at_us - self.since_us >= span_us:
            self.confirmed, self.pending, self.count, self.since_us = obs, None, 0, 0
            return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "confirmed": self.confirmed,
            "pending": self.pending,
            "count": self.count,
            "since_us": self.since_us,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Debounce:
        return cls(
            confirmed=str(data["confirmed"]),
            pending=None if data.get("pending") is None else str(data["pending"]),
            count=int(data.get("count", 0)),
            since_us=int(data.get("since_us", 0)),
        )


@dataclass
class GuardFenceState:
    """Hysteresis state of one guard: primitives only (picklable, JSON via ``to_dict``)."""

    guard_id: int
    last_us: int | None = None
    """Event time (µs since the epoch, UTC) of the last processed fix."""
    fence: Debounce = field(default_factory=Debounce)
    """Guard level: ``outside`` confirmed means a raised violation."""
    zones: dict[int, Debounce] = field(default_factory=dict)
    """Zone level, only for zones entered or with a streak under way."""

    def copy(self) -> GuardFenceState:
        """A deep copy."""
        return GuardFenceState.from_dict(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (zone ids become string keys)."""
        return {
            "guard_id": self.guard_id,
            "last_us": self.last_us,
            "fence": self.fence.to_dict(),
            "zones": {str(z): d.to_dict() for z, d in sorted(self.zones.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuardFenceState:
        """Inverse of :meth:`to_dict`."""
        last = data.get("last_us")
        return cls(
            guard_id=int(data["guard_id"]),
            last_us=None if last is None else int(last),
            fence=Debounce.from_dict(data["fence"]),
            zones={int(z): Debounce.from_dict(d) for z, d in data.get("zones", {}).items()},
        )


@dataclass(frozen=True)
class GeofenceConfig:
    """Hysteresis settings; :meth:`build` makes a guard's :class:`GeofenceTracker`."""

    confirm_fixes: int = 3
    """Consecutive confident fixes needed to confirm leaving (violation / exit)."""
    confirm_seconds: float = 30.0
    """...spanning at least this many seconds of event time."""
    clear_fixes: int | None = None
    """Fixes to confirm coming back (back_inside / enter); ``None``: ``confirm_fixes``."""
    clear_seconds: float | None = None
    """Span to confirm coming back; ``None``: ``confirm_seconds``."""
    zone_events: bool = True
    """Emit ``enter``/``exit`` per zone as well as ``violation``/``back_inside``."""

    def __post_init__(self) -> None:
        for name in ("confirm_fixes", "clear_fixes"):
            value = getattr(self, name)
            if value is None and name == "clear_fixes":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("confirm_seconds", "clear_seconds"):
            value = getattr(self, name)
            if value is None and name == "clear_seconds":
                continue
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")

    def build(self, guard_id: int, resume_state: GuardFenceState | None = None) -> GeofenceTracker:
        """A tracker for ``guard_id``, fresh or resumed from a snapshot (copied)."""
        return GeofenceTracker(self, guard_id, resume_state)


def _us(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError("fix time must be timezone-aware (UTC)")
    delta = at - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _observe(distance_m: float, accuracy_m: float) -> str | None:
    if distance_m >= accuracy_m:
        return INSIDE
    if distance_m < -accuracy_m:
        return OUTSIDE
    return None


class GeofenceTracker:
    """Hysteresis logic of one guard. Not thread-safe; one instance per guard key."""

    def __init__(
        self, config: GeofenceConfig, guard_id: int, state: GuardFenceState | None = None
    ) -> None:
        if state is not None and state.guard_id != guard_id:
            raise ValueError(f"state is for guard {state.guard_id}, not {guard_id}")
        self.config = config
        self.guard_id = guard_id
        self.state = state.copy() if state is not None else GuardFenceState(guard_id)
        self._leave = (config.confirm_fixes, round(config.confirm_seconds * 1e6))
        clear_fixes = config.clear_fixes if config.clear_fixes is not None else config.confirm_fixes
        clear_s = (
            config.clear_seconds if config.clear_seconds is not None else config.confirm_seconds
        )
        self._back = (clear_fixes, round(clear_s * 1e6))

    @property
    def in_violation(self) -> bool:
        """Whether a violation is raised and not yet cleared."""
        return self.state.fence.confirmed == OUTSIDE

    def snapshot(self) -> GuardFenceState:
        """A copy of the state, for recovery."""
        return self.state.copy()

    def _rule(self, obs: str) -> tuple[int, int]:
        return self._leave if obs == OUTSIDE else self._back

    def on_fix(self, at: datetime, result: FixResult) -> list[FenceEvent]:
        """Feed the index's answer for the guard's fix at ``at``; return confirmed events."""
        at_us = _us(at)
        state = self.state
        if state.last_us is not None and at_us <= state.last_us:
            return []  # late or duplicate: the hysteresis only moves forward in event time
        state.last_us = at_us
        exits: list[FenceEvent] = []
        enters: list[FenceEvent] = []
        if self.config.zone_events:
            seen = dict(result.zones)
            for zone_id in sorted(set(seen) | set(state.zones)):
                dist = seen.get(zone_id)
                obs = OUTSIDE if dist is None else _observe(dist, result.accuracy_m)
                deb = state.zones.get(zone_id)
                if deb is None:
                    if obs is None or obs == OUTSIDE:
                        continue  # nothing to confirm: not entered, not entering
                    deb = state.zones[zone_id] = Debounce()
                before = deb.confirmed
                if obs is not None and deb.observe(obs, at_us, *self._rule(obs)):
                    if obs == INSIDE:
                        enters.append(self._event(FenceEventKind.ENTER, zone_id, dist, at))
                    elif before == INSIDE:
                        exits.append(self._event(FenceEventKind.EXIT, zone_id, dist, at))
                if deb.confirmed != INSIDE and deb.pending is None:
                    del state.zones[zone_id]
        fence: list[FenceEvent] = []
        obs = {
            Classification.INSIDE: INSIDE,
            Classification.OUTSIDE: OUTSIDE,
            Classification.UNCERTAIN: None,
        }[result.classification]
        before = state.fence.confirmed
        if obs is not None and state.fence.observe(obs, at_us, *self._rule(obs)):
            distance = result.distance_m if math.isfinite(result.distance_m) else None
            if obs == OUTSIDE:
                fence.append(self._event(FenceEventKind.VIOLATION, result.zone_id, distance, at))
            elif before == OUTSIDE:
                fence.append(self._event(FenceEventKind.BACK_INSIDE, result.zone_id, distance, at))
        return exits + fence + enters

    def _event(
        self, kind: FenceEventKind, zone_id: int | None, distance: float | None, at: datetime
    ) -> FenceEvent:
        return FenceEvent(kind, self.guard_id, zone_id, distance, at)
