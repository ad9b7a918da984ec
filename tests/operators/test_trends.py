"""Telemetry trends: battery drain rate over a sliding window, sustained high temperature."""

from __future__ import annotations

import itertools
import pickle
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from operators.errors import ConfigError
from operators.trends import (
    BATTERY_DRAIN,
    TEMPERATURE_SUSTAINED,
    TrendConfig,
    drain_per_hour,
)

T0 = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"battery_window_s": 300.0}, ">= 600"),
        ({"battery_drain_per_hour": 0.0}, "> 0"),
        ({"battery_drain_per_hour": float("nan")}, "finite"),
        ({"battery_min_span_s": 1000.0}, "<= battery_window_s"),
        ({"battery_min_samples": 1}, ">= 2"),
        ({"battery_clear_ratio": 1.5}, "(0, 1]"),
        ({"battery_eval_s": -1.0}, "battery_eval_s must be >= 0"),
        ({"battery_eval_s": 1000.0}, "<= battery_window_s"),
        ({"temperature_sustained_s": 0.0}, "> 0"),
        ({"temperature_high": "hot"}, "finite number"),
        ({"battery_severity": "loud"}, "must be one of"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        TrendConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("series", "rate"),
    [
        ([(0, 100), (600, 90), (1200, 80)], 60.0),  # 10 points per 10 min
        ([(0, 50), (3600, 50)], 0.0),
        ([(0, 20), (1800, 30)], -20.0),  # charging: negative drain
        ([(0, 80), (0, 70)], 0.0),  # no time span: no rate
    ],
)
def test_drain_per_hour(series: list[tuple[float, float]], rate: float) -> None:
    assert drain_per_hour([(at(t), v) for t, v in series]) == pytest.approx(rate)


def battery_events(
    readings: list[tuple[float, float]], **kwargs: float
) -> list[tuple[bool, float]]:
    trends = TrendConfig(**kwargs).build()  # type: ignore[arg-type]
    out = []
    for t, v in readings:
        event = trends.battery(at(t), v)
        if event is not None:
            assert event.alert_type == BATTERY_DRAIN
            out.append((event.raised, t))
    return out


def every_minute(start_s: float, values: list[float]) -> list[tuple[float, float]]:
    return [(start_s + 60 * i, v) for i, v in enumerate(values)]


BATTERY_CASES = {
    # 1 %/min = 60 %/h: raised as soon as the window spans 10 minutes.
    "fast drain raises once": (every_minute(0, [100 - i for i in range(20)]), [(True, 600)]),
    "slow drain (6 %/h) raises nothing": (every_minute(0, [100 - i / 10 for i in range(40)]), []),
    "too little history decides nothing": (every_minute(0, [100 - 3 * i for i in range(9)]), []),
    "one glitch mid-window is not a trend": (
        every_minute(0, [80.0] * 7 + [40.0] + [80.0] * 10),
        [],
    ),
    "drain then charging clears": (
        every_minute(0, [100 - i for i in range(15)])
        + every_minute(900, [90 + i for i in range(10)]),
        [(True, 600), (False, 1140)],  # medians react once a third of the window charges
    ),
    "sparse readings: the window still needs 10 minutes": (
        [(0, 100), (300, 90), (599, 80), (601, 79)],
        [(True, 601)],
    ),
}


@pytest.mark.parametrize("case", BATTERY_CASES.values(), ids=list(BATTERY_CASES))
def test_battery_table(case: tuple[list[tuple[float, float]], list[tuple[bool, float]]]) -> None:
    readings, expected = case
    assert battery_events(readings) == expected


def test_battery_clear_has_hysteresis() -> None:
    """Raised at >= 20 %/h, cleared only below 16 %/h: a rate of 18 %/h keeps it raised."""
    drain = every_minute(0, [100 - i for i in range(11)])  # 60 %/h
    steady = [(600 + 60 * i, 90 - 0.3 * i) for i in range(1, 40)]  # 18 %/h afterwards
    events = battery_events(drain + steady)
    assert events == [(True, 600)]
    slower = [(600 + 60 * 40 + 60 * i, 78 - 0.1 * i) for i in range(1, 30)]  # 6 %/h
    events = battery_events(drain + steady + slower)
    assert [raised for raised, _ in events] == [True, False]


def test_the_drain_rate_is_computed_at_most_once_per_eval_interval() -> None:
    """A device reporting every second: the rate (O(n log n) over 900 readings) is computed
    every 15 s of event time, not for every reading; the alert still comes at 10 minutes."""
    trends = TrendConfig(battery_eval_s=15.0).build()
    evaluations: list[datetime] = []
    raised = []
    for t in range(0, 1200):
        event = trends.battery(at(t), 100 - t / 60)  # 60 %/h
        if event is not None:
            raised.append((event.raised, t))
        e = trends.state.battery.evaluated_at
        if e is not None and (not evaluations or evaluations[-1] != e):
            evaluations.append(e)
    assert raised == [(True, 600)]
    assert evaluations[0] == at(600)
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(evaluations)}
    assert gaps == {15.0}
    assert len(trends.state.battery.samples) == 901  # the window: readings of the last 900 s


def test_battery_event_details() -> None:
    trends = TrendConfig().build()
    event = None
    for t, v in every_minute(0, [100 - i for i in range(11)]):
        event = trends.battery(at(t), v) or event
    assert event is not None and event.raised
    assert event.details["drain_per_hour"] == pytest.approx(60.0)
    assert event.details["samples"] == 11 and event.details["battery"] == 90
    assert event.since == event.at == at(600)


def temperature_events(
    readings: list[tuple[float, float]], **kwargs: float
) -> list[tuple[bool, float, float]]:
    trends = TrendConfig(**kwargs).build()  # type: ignore[arg-type]
    out = []
    for t, v in readings:
        event = trends.temperature(at(t), v)
        if event is not None:
            assert event.alert_type == TEMPERATURE_SUSTAINED
            out.append((event.raised, t, (event.since - T0).total_seconds()))
    return out


TEMPERATURE_CASES = {
    "one spike is not sustained": ([(0, 25), (30, 90), (60, 25), (90, 25)], []),
    "sustained for 5 minutes raises": (
        [(30 * i, 55) for i in range(12)],
        [(True, 300, 0)],
    ),
    "a dip restarts the run": (
        [(0, 55), (120, 55), (240, 50), (270, 55), (540, 55), (570, 55)],
        [(True, 570, 270)],
    ),
    "exactly the threshold is not above": ([(30 * i, 50) for i in range(20)], []),
    "cleared by the first reading at or below": (
        [(0, 60), (300, 61), (330, 70), (360, 49.5), (390, 60)],
        [(True, 300, 0), (False, 360, 0)],
    ),
    "two readings far apart are a sustained run": ([(0, 55), (300, 55)], [(True, 300, 0)]),
}


@pytest.mark.parametrize("case", TEMPERATURE_CASES.values(), ids=list(TEMPERATURE_CASES))
def test_temperature_table(
    case: tuple[list[tuple[float, float]], list[tuple[bool, float, float]]],
) -> None:
    readings, expected = case
    assert temperature_events(readings) == expected


def test_temperature_peak_is_reported() -> None:
    trends = TrendConfig().build()
    events = [trends.temperature(at(t), v) for t, v in [(0, 52), (100, 71), (300, 53)]]
    assert events[-1] is not None and events[-1].details["peak"] == 71


def test_snapshot_is_a_deep_copy() -> None:
    trends = TrendConfig().build()
    trends.battery(at(0), 90)
    snap = trends.snapshot()
    trends.battery(at(60), 89)
    assert len(snap.battery.samples) == 1
    assert pickle.loads(pickle.dumps(snap)) == snap


@given(
    st.lists(st.floats(min_value=-20, max_value=100, allow_nan=False), max_size=60),
    st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=60),
)
def test_raises_and_clears_alternate(temps: list[float], batteries: list[float]) -> None:
    """Per alert type, events alternate raise / clear, starting with a raise."""
    trends = TrendConfig().build()
    raised = {BATTERY_DRAIN: False, TEMPERATURE_SUSTAINED: False}
    for i, (temp, battery) in enumerate(zip(temps, batteries, strict=False)):
        for event in (trends.temperature(at(45 * i), temp), trends.battery(at(45 * i), battery)):
            if event is not None:
                assert event.raised is not raised[event.alert_type]
                raised[event.alert_type] = event.raised
