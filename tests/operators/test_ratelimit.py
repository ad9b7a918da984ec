"""Sliding-window rate limit: exact edges, reopening time, and the invariant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.errors import ConfigError
from operators.ratelimit import RateLimit, SlidingWindowLimiter

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_allows_limit_then_refuses_until_the_oldest_leaves_the_window() -> None:
    limiter = RateLimit(3, timedelta(seconds=60)).build()
    assert [limiter.try_acquire(s(i)).allowed for i in range(3)] == [True, True, True]
    refused = limiter.try_acquire(s(10))
    assert (refused.allowed, refused.used, refused.reopens_at) == (False, 3, s(60))
    assert not limiter.try_acquire(s(59.999)).allowed
    assert limiter.try_acquire(s(60)).allowed  # the send at 0 left the window (now - 60, now]
    assert not limiter.try_acquire(s(60.5)).allowed
    assert limiter.check(s(60.5)).reopens_at == s(61)


def test_refusals_are_not_recorded() -> None:
    limiter = RateLimit(1, timedelta(seconds=10)).build()
    assert limiter.try_acquire(s(0)).allowed
    for i in range(1, 10):
        assert not limiter.try_acquire(s(i)).allowed
    assert limiter.try_acquire(s(10)).allowed


def test_seeded_with_recorded_sends() -> None:
    limiter = RateLimit(10).build()
    for i in range(10):
        limiter.record(s(i))
    decision = limiter.check(s(30))
    assert (decision.allowed, decision.used, decision.reopens_at) == (False, 10, s(60))
    assert limiter.used(s(65)) == 4


def test_snapshot_is_a_copy() -> None:
    limiter = RateLimit(2).build()
    limiter.try_acquire(s(0))
    snap = limiter.snapshot()
    limiter.try_acquire(s(1))
    assert snap.sends == [s(0)]


@pytest.mark.parametrize(
    ("limit", "window"),
    [(0, timedelta(seconds=1)), (-1, timedelta(seconds=1)), (True, timedelta(seconds=1)), (1, timedelta(0))],
)  # fmt: skip
def test_invalid_config(limit: int, window: timedelta) -> None:
    with pytest.raises(ConfigError):
        RateLimit(limit, window)


@given(
    limit=st.integers(1, 5),
    window_s=st.integers(1, 30),
    gaps=st.lists(st.integers(0, 20), min_size=1, max_size=80),
)
def test_never_more_than_limit_in_any_window(limit: int, window_s: int, gaps: list[int]) -> None:
    window = timedelta(seconds=window_s)
    limiter = RateLimit(limit, window).build()
    now = T0
    allowed: list[datetime] = []
    for gap in gaps:
        now += timedelta(seconds=gap)
        decision = limiter.try_acquire(now)
        if decision.allowed:
            allowed.append(now)
        else:
            assert decision.reopens_at is not None and decision.reopens_at > now
            probe = SlidingWindowLimiter(limiter.config, limiter.snapshot())
            assert probe.check(decision.reopens_at).allowed  # it does reopen then
    for t in allowed:
        assert sum(1 for u in allowed if t - window < u <= t) <= limit
