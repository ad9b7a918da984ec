"""Per-recipient rate limit: a sliding-window log (pure; time is passed in).

:class:`RateLimit` (config: at most ``limit`` sends in any ``window``) builds a
:class:`SlidingWindowLimiter`, whose state is the times of the sends still inside the window.
The notifier seeds a limiter with the sends recorded in the database, then asks it, row by row,
whether one more send is allowed now. Unlike a token bucket, a sliding-window log never lets
more than ``limit`` sends into any window of that length, including across its edges.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from operators.errors import ConfigError


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` sends in any window of length ``window``."""

    limit: int
    window: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigError(f"rate limit must be a positive integer, got {self.limit!r}")
        if self.window <= timedelta(0):
            raise ConfigError(f"rate limit window must be positive, got {self.window}")

    def build(self) -> SlidingWindowLimiter:
        return SlidingWindowLimiter(self)


@dataclass(frozen=True)
class Decision:
    """Whether a send is allowed now; if not, when the window reopens for one more."""

    allowed: bool
    used: int
    reopens_at: datetime | None = None


@dataclass
class WindowState:
    """Send times, ascending; only those that can still matter are kept."""

    sends: list[datetime] = field(default_factory=list)


class SlidingWindowLimiter:
    """Applies a :class:`RateLimit` to one recipient. Not thread-safe; cheap to build."""

    def __init__(self, config: RateLimit, state: WindowState | None = None) -> None:
        self.config = config
        self.state = state or WindowState()

    def record(self, at: datetime) -> None:
        """Note a send that happened (or is in flight) at ``at``, allowed or not."""
        insort(self.state.sends, at)

    def used(self, now: datetime) -> int:
        """Sends in the window ending at ``now``: times in ``(now - window, now]``."""
        self._expire(now)
        return sum(1 for t in self.state.sends if t <= now)

    def check(self, now: datetime) -> Decision:
        """Would one more send at ``now`` stay within the limit? Does not record it."""
        used = self.used(now)
        if used < self.config.limit:
            return Decision(True, used)
        in_window = [t for t in self.state.sends if t <= now]
        # The send that frees a slot is the (used - limit + 1)-th oldest in the window.
        freeing = in_window[used - self.config.limit]
        return Decision(False, used, freeing + self.config.window)

    def try_acquire(self, now: datetime) -> Decision:
        """Allow and record one send at ``now`` if within the limit; else say when it reopens."""
        decision = self.check(now)
        if decision.allowed:
            self.record(now)
        return decision

    def snapshot(self) -> WindowState:
        """A copy of the state."""
        return WindowState(list(self.state.sends))

    def _expire(self, now: datetime) -> None:
        horizon = now - self.config.window
        sends = self.state.sends
        drop = 0
        while drop < len(sends) and sends[drop] <= horizon:
            drop += 1
        if drop:
            del sends[:drop]
