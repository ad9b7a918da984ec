"""Man-down: a guard on shift who has not moved more than X metres in Y minutes."""

from __future__ import annotations

import math
import pickle
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.errors import ConfigError
from operators.geo import METRES_PER_DEGREE
from operators.immobility import ImmobilityConfig, ImmobilityEventKind, distance_m

T0 = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)
LAT, LON = 12.9716, 77.5946
DOWN, MOVED, OFF = (
    ImmobilityEventKind.MAN_DOWN,
    ImmobilityEventKind.MOVED,
    ImmobilityEventKind.OFF_SHIFT,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def offset(north_m: float, east_m: float) -> tuple[float, float]:
    return (
        LAT + north_m / METRES_PER_DEGREE,
        LON + east_m / (METRES_PER_DEGREE * math.cos(math.radians(LAT))),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"radius_m": 0}, "> 0"),
        ({"still_minutes": -1}, "> 0"),
        ({"max_accuracy_m": float("inf")}, "> 0"),
        ({"radius_m": True}, "> 0"),
        ({"severity": "huge"}, "must be one of"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ImmobilityConfig(**kwargs)  # type: ignore[arg-type]


def test_distance() -> None:
    assert distance_m(LAT, LON, LAT, LON) == 0
    assert distance_m(0, 0, 1, 0) == pytest.approx(METRES_PER_DEGREE)
    lat, lon = offset(30, 40)
    assert distance_m(LAT, LON, lat, lon) == pytest.approx(50, rel=1e-3)


# A fix: (t_s, north_m, east_m[, accuracy[, on_shift]]); expected: (kind, t_s, since_s).
Fix = tuple[float, ...]


def run(
    fixes: list[tuple[object, ...]], **kwargs: float
) -> list[tuple[ImmobilityEventKind, float, float]]:
    detector = ImmobilityConfig(**kwargs).build()  # type: ignore[arg-type]
    out = []
    for fix in fixes:
        t, north, east = (float(v) for v in fix[:3])  # type: ignore[arg-type]
        accuracy = float(fix[3]) if len(fix) > 3 else 5.0  # type: ignore[arg-type]
        on_shift = bool(fix[4]) if len(fix) > 4 else True
        lat, lon = offset(north, east)
        event = detector.on_fix(at(t), lat, lon, accuracy, on_shift)
        if event is not None:
            out.append((event.kind, t, (event.since - T0).total_seconds()))
    return out


def still(
    start_s: float, minutes: int, north: float = 0.0, east: float = 0.0
) -> list[tuple[object, ...]]:
    """One fix a minute with a few metres of jitter around (north, east)."""
    return [
        (start_s + 60 * i, north + 3 * math.sin(i), east + 3 * math.cos(i))
        for i in range(minutes + 1)
    ]


CASES = {
    "still for 10 minutes": (still(0, 12), [(DOWN, 600, 0)]),
    "still for 9 minutes": (still(0, 9), []),
    "walking never": ([(60 * i, 0, 30 * i) for i in range(30)], []),
    "moving again resolves": (
        [*still(0, 11), (720, 0, 100), (780, 0, 200)],
        [(DOWN, 600, 0), (MOVED, 720, 0)],
    ),
    "a second still period raises again": (
        [*still(0, 11), (720, 0, 100), *still(780, 11, 0, 100)],
        [(DOWN, 600, 0), (MOVED, 720, 0), (DOWN, 1320, 720)],
    ),
    "slow drift within the radius is not movement": (
        [(60 * i, 0, 2 * i) for i in range(12)],  # 22 m in 11 minutes
        [(DOWN, 600, 0)],
    ),
    "imprecise fixes are ignored": (
        still(0, 5) + [(360, 0, 400, 300.0)] + [(60 * i, 0, 0) for i in range(7, 12)],
        [(DOWN, 600, 0)],
    ),
    "off shift: never": ([(*f, 5.0, False) for f in still(0, 20)], []),
    "going off shift resolves and forgets": (
        [*still(0, 11), (720, 0, 0, 5.0, False), *still(780, 9)],
        [(DOWN, 600, 0), (OFF, 720, 0)],
    ),
    "back on shift starts a new still period": (
        [(0, 0, 0, 5.0, False), (60, 0, 0, 5.0, False), *still(120, 10)],
        [(DOWN, 720, 120)],
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_man_down_table(case: tuple[list[tuple[object, ...]], list[tuple[object, ...]]]) -> None:
    fixes, expected = case
    assert run(fixes) == expected


def test_radius_and_minutes_are_settings() -> None:
    fixes = [(60 * i, 0, 8 * i) for i in range(6)]  # 40 m in 5 minutes
    assert run(fixes) == []  # default 25 m / 10 min
    assert run(fixes, radius_m=50, still_minutes=5) == [(DOWN, 300, 0)]


def test_event_carries_where_and_since() -> None:
    detector = ImmobilityConfig().build()
    lat, lon = offset(10, 10)
    events = [detector.on_fix(at(60 * i), lat, lon, None, True) for i in range(11)]
    event = events[-1]
    assert event is not None and event.kind is DOWN
    assert (event.lat, event.lon, event.since) == (lat, lon, T0)


def test_snapshot_resumes() -> None:
    detector = ImmobilityConfig().build()
    for i in range(5):
        detector.on_fix(at(60 * i), LAT, LON, 5.0, True)
    resumed = ImmobilityConfig().build(pickle.loads(pickle.dumps(detector.snapshot())))
    events = [resumed.on_fix(at(60 * i), LAT, LON, 5.0, True) for i in range(5, 11)]
    assert [e.kind for e in events if e] == [DOWN]


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=120),
            st.floats(min_value=-60, max_value=60),
            st.floats(min_value=-60, max_value=60),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_alerts_alternate_and_need_the_full_still_period(
    steps: list[tuple[float, float, float, bool]],
) -> None:
    detector = ImmobilityConfig().build()
    raised = False
    t = 0.0
    for dt, north, east, on_shift in steps:
        t += dt
        lat, lon = offset(north, east)
        event = detector.on_fix(at(t), lat, lon, 5.0, on_shift)
        if event is None:
            continue
        assert (event.kind is DOWN) is not raised
        raised = event.kind is DOWN
        if raised:
            assert on_shift and event.at - event.since >= timedelta(minutes=10)
