"""Device heartbeat: offline after N silent intervals (processing time), back online on a message."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.errors import ConfigError
from operators.heartbeat import (
    HeartbeatConfig,
    HeartbeatEventKind,
    HeartbeatState,
)

T0 = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)
INTERVAL = 10.0  # seconds; with the default 3 intervals the deadline is 30 s after a message
OFF, ON = HeartbeatEventKind.OFFLINE, HeartbeatEventKind.ONLINE


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"intervals": 0}, ">= 1"),
        ({"intervals": True}, "integer"),
        ({"intervals": 1.5}, "integer"),
        ({"severity_by_kind": {"sensor": "urgent"}}, "unknown severity"),
        ({"default_severity": "meh"}, "unknown severity"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HeartbeatConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "severity"),
    [("guard_device", "high"), ("panic_button", "high"), ("gateway", "high"),
     ("sensor", "medium"), ("something_new", "medium"), (None, "medium")],
)  # fmt: skip
def test_offline_severity_by_kind(kind: str | None, severity: str) -> None:
    assert HeartbeatConfig().severity(kind) == severity


# Steps: ("msg", received_s[, event_s]) or ("tick", now_s); expected: (kind, at_s) per event.
CASES = {
    "silent after one message": (
        [("msg", 0), ("tick", 29.9), ("tick", 30)],
        [(OFF, 30)],
    ),
    "messages keep it alive": (
        [("msg", 0), ("msg", 20), ("tick", 40), ("tick", 50)],
        [(OFF, 50)],
    ),
    "the next message brings it back": (
        [("msg", 0), ("tick", 35), ("msg", 40)],
        [(OFF, 30), (ON, 40)],
    ),
    "never heard from: never offline": (
        [("tick", 1000)],
        [],
    ),
    "a long silence is reported once": (
        [("msg", 0), ("tick", 100), ("tick", 200), ("tick", 900)],
        [(OFF, 30)],
    ),
    "a message that beats the timer wins": (
        [("msg", 0), ("msg", 31), ("tick", 60), ("tick", 61)],
        [(OFF, 61)],
    ),
    "an old event time still proves it alive": (
        [("msg", 0), ("msg", 25, -3600), ("tick", 50), ("tick", 55)],
        [(OFF, 55)],
    ),
    "offline again after coming back": (
        [("msg", 0), ("tick", 30), ("msg", 40), ("tick", 69), ("tick", 70)],
        [(OFF, 30), (ON, 40), (OFF, 70)],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_heartbeat_table(case: tuple[list[tuple[object, ...]], list[tuple[object, float]]]) -> None:
    steps, expected = case
    heart = HeartbeatConfig().build()
    seen = []
    for step in steps:
        if step[0] == "msg":
            received = at(float(step[1]))  # type: ignore[arg-type]
            event_s = float(step[2]) if len(step) > 2 else float(step[1])  # type: ignore[arg-type]
            event = heart.heard(at(event_s), received)
        else:
            event = heart.check(at(float(step[1])), INTERVAL)  # type: ignore[arg-type]
        if event is not None:
            seen.append((event.kind, (event.at - T0).total_seconds()))
    assert seen == expected


def test_events_carry_the_silence() -> None:
    heart = HeartbeatConfig(intervals=2).build()
    heart.heard(at(-5), at(0))
    off = heart.check(at(25), INTERVAL)
    assert off is not None
    assert (off.kind, off.at, off.heard_at, off.last_event, off.silent_s) == (
        OFF, at(20), at(0), at(-5), 20.0,
    )  # fmt: skip
    on = heart.heard(at(40), at(41))
    assert on is not None and on.kind is ON and on.at == at(41) and on.silent_s == 41.0


def test_due_and_interval_changes() -> None:
    heart = HeartbeatConfig().build()
    assert heart.due(INTERVAL) is None  # never heard
    heart.heard(at(0), at(0))
    assert heart.due(INTERVAL) == at(30)
    assert heart.due(60.0) == at(180)  # the registry changed the interval
    assert heart.due(None) is None  # no interval: no heartbeat
    heart.check(at(30), INTERVAL)
    assert heart.offline and heart.due(INTERVAL) is None


def test_snapshot_is_a_picklable_copy() -> None:
    heart = HeartbeatConfig().build()
    heart.heard(at(0), at(0))
    snap = heart.snapshot()
    heart.check(at(30), INTERVAL)
    assert snap == HeartbeatState(at(0), at(0), None)
    resumed = HeartbeatConfig().build(pickle.loads(pickle.dumps(snap)))
    assert resumed.check(at(30), INTERVAL) is not None


@given(
    st.lists(
        st.tuples(st.booleans(), st.floats(min_value=0, max_value=500, allow_nan=False)),
        max_size=40,
    )
)
def test_offline_and_online_alternate(steps: list[tuple[bool, float]]) -> None:
    """Whatever the order of messages and ticks: never offline twice in a row, never back online
    without having been offline, and offline only after a silence of N intervals."""
    heart = HeartbeatConfig().build()
    last_kind = ON
    clock = 0.0
    for is_message, dt in steps:
        clock += dt
        if is_message:
            event = heart.heard(at(clock), at(clock))
        else:
            before = heart.state.heard_at
            event = heart.check(at(clock), INTERVAL)
            if event is not None:
                assert before is not None and event.at - before >= timedelta(seconds=30)
        if event is not None:
            assert event.kind is not last_kind
            last_kind = event.kind
