"""Per-guard hysteresis: jitter, confirmed violations, zone events, restarts, ordering."""

from __future__ import annotations

import json
import math
import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from operators.errors import ConfigError
from operators.geo import METRES_PER_DEGREE
from operators.geofence import Classification, FixResult, PolygonShape, Zone
from operators.geofence_hysteresis import (
    FenceEvent,
    FenceEventKind,
    GeofenceConfig,
    GeofenceTracker,
    GuardFenceState,
)
from operators.geofence_index import FixBatch, ZoneIndex, ZoneIndexConfig

GUARD = 123
TENANT = 1
LAT, LON = 12.9716, 77.5946
SIDE = 200.0  # metres
T0 = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)
V, B, EN, EX = (
    FenceEventKind.VIOLATION,
    FenceEventKind.BACK_INSIDE,
    FenceEventKind.ENTER,
    FenceEventKind.EXIT,
)


def square_zone(zone_id: int, lat: float, lon: float, side_m: float) -> Zone:
    h = side_m / 2 / METRES_PER_DEGREE
    w = h / math.cos(math.radians(lat))
    ring = ((lon - w, lat - h), (lon + w, lat - h), (lon + w, lat + h), (lon - w, lat + h))
    return Zone(zone_id, TENANT, 7, f"z{zone_id}", PolygonShape(((ring + ring[:1],),)))


def site_index() -> ZoneIndex:
    return ZoneIndexConfig().build([square_zone(1, LAT, LON, SIDE)])


def run(
    index: ZoneIndex,
    tracker: GeofenceTracker,
    east_m: np.ndarray,
    north_m: np.ndarray,
    accuracy: float = 10.0,
    start: datetime = T0,
    step_s: float = 5.0,
) -> list[FenceEvent]:
    """Feed fixes at ``east_m``/``north_m`` metres from the zone centre, one per ``step_s``."""
    n = len(east_m)
    lat = LAT + north_m / METRES_PER_DEGREE
    lon = LON + east_m / (METRES_PER_DEGREE * math.cos(math.radians(LAT)))
    times = [start + timedelta(seconds=step_s * i) for i in range(n)]
    batch = FixBatch(
        tenant_id=np.full(n, TENANT),
        lat=lat,
        lon=lon,
        accuracy_m=np.full(n, accuracy),
        time_s=np.array([t.timestamp() for t in times]),
        approved=np.zeros(n, dtype=np.int64),
        approved_sets=(frozenset({1}),),
    )
    result = index.query(batch)
    events: list[FenceEvent] = []
    for i, when in enumerate(times):
        events.extend(tracker.on_fix(when, result.result(i)))
    return events


def kinds(events: list[FenceEvent]) -> list[FenceEventKind]:
    return [e.kind for e in events]


def test_jitter_three_metres_inside_never_raises_a_violation() -> None:
    """An hour at 1 fix / 5 s, 3 m inside the boundary, 10 m accuracy, N(0, 5 m) noise."""
    rng = np.random.default_rng(20260601)
    n = 720
    east = SIDE / 2 - 3.0 + rng.normal(0.0, 5.0, n)
    north = rng.normal(0.0, 5.0, n)
    index = site_index()
    tracker = GeofenceConfig().build(GUARD)
    events = run(index, tracker, east, north)
    assert V not in kinds(events)
    assert not tracker.in_violation
    # the noise really does push single fixes out: hysteresis is what keeps it quiet
    lat = LAT + north / METRES_PER_DEGREE
    lon = LON + east / (METRES_PER_DEGREE * math.cos(math.radians(LAT)))
    batch = FixBatch(
        tenant_id=np.full(n, TENANT),
        lat=lat,
        lon=lon,
        accuracy_m=np.full(n, 0.0),
        time_s=np.full(n, T0.timestamp()),
        approved=np.zeros(n, dtype=np.int64),
        approved_sets=(frozenset({1}),),
    )
    assert int((index.query(batch).distance_m < 0).sum()) > 50


def walk(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stand inside, walk 200 m out at 1.4 m/s, wait, walk back, wait (with GPS noise)."""
    inside_x = SIDE / 2 - 50.0
    outside_x = SIDE / 2 + 200.0
    leg = np.linspace(inside_x, outside_x, int((outside_x - inside_x) / 1.4 / 5.0))
    path = np.concatenate(
        [np.full(120, inside_x), leg, np.full(120, outside_x), leg[::-1], np.full(120, inside_x)]
    )
    noise = rng.normal(0.0, 5.0, (2, len(path)))
    return path + noise[0], noise[1]


def test_walking_out_and_back_gives_exactly_one_violation_and_one_back_inside() -> None:
    east, north = walk(np.random.default_rng(7))
    tracker = GeofenceConfig().build(GUARD)
    events = run(site_index(), tracker, east, north)
    assert kinds(events) == [EN, EX, V, B, EN]
    violation = events[2]
    assert violation.guard_id == GUARD and violation.zone_id == 1
    assert violation.distance_m is not None and violation.distance_m < -10.0
    assert events[1].time == violation.time  # the zone exit confirms with the violation
    back = events[3]
    assert back.zone_id == 1 and back.distance_m is not None and back.distance_m >= 10.0
    assert back.time > violation.time


def test_violation_needs_k_fixes_and_t_seconds() -> None:
    index = site_index()
    config = GeofenceConfig(confirm_fixes=3, confirm_seconds=30.0)
    inside = np.zeros(10)
    out = np.full(10, SIDE)  # 100 m outside
    # 1 fix / 20 s: 3 fixes span 40 s -> confirmed on the 3rd outside fix
    tracker = config.build(GUARD)
    run(index, tracker, inside, np.zeros(10), step_s=20.0)
    start = T0 + timedelta(hours=1)
    events = run(index, tracker, out, np.zeros(10), start=start, step_s=20.0)
    assert kinds(events) == [EX, V] and events[1].time == start + timedelta(seconds=40)
    # 1 fix / 2 s: 3 fixes span only 4 s; confirmed when the streak spans 30 s (16th fix)
    tracker = config.build(GUARD)
    assert kinds(run(index, tracker, np.zeros(20), np.zeros(20), step_s=2.0)) == [EN]
    events = run(index, tracker, np.full(20, SIDE), np.zeros(20), start=start, step_s=2.0)
    assert kinds(events) == [EX, V] and events[1].time == start + timedelta(seconds=30)


def result(classification: Classification, distance: float, zone: int | None = 1) -> FixResult:
    zones = () if zone is None else ((zone, distance),)
    return FixResult(classification, zone, distance, 10.0, zones)


IN = result(Classification.INSIDE, 50.0)
OUT = result(Classification.OUTSIDE, -50.0)
UNSURE = result(Classification.UNCERTAIN, -5.0)


def feed(tracker: GeofenceTracker, sequence: list[FixResult], start: datetime = T0) -> list[str]:
    out: list[str] = []
    for i, r in enumerate(sequence):
        out.extend(e.kind.value for e in tracker.on_fix(start + timedelta(seconds=10 * i), r))
    return out


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ([IN, IN, IN], ["enter"]),
        ([OUT, OUT, OUT], ["violation"]),  # outside from the start is a violation
        ([IN, IN, IN, OUT, OUT, OUT], ["enter", "exit", "violation"]),
        ([IN, IN, IN, OUT, OUT, IN, OUT, OUT], ["enter"]),  # an inside fix resets the streak
        ([IN, IN, IN, OUT, UNSURE, OUT, UNSURE, OUT], ["enter", "exit", "violation"]),
        ([IN, IN, IN, UNSURE, UNSURE, UNSURE, UNSURE], ["enter"]),  # uncertain never confirms
        ([OUT, OUT, OUT, IN, IN, IN], ["violation", "back_inside", "enter"]),
        ([OUT, OUT, OUT, IN, IN, OUT, IN, IN, IN], ["violation", "back_inside", "enter"]),
        ([OUT, OUT, OUT, OUT, OUT, OUT], ["violation"]),  # raised once, not repeated
    ],
)
def test_hysteresis_rules(sequence: list[FixResult], expected: list[str]) -> None:
    tracker = GeofenceConfig(confirm_fixes=3, confirm_seconds=20.0).build(GUARD)
    assert feed(tracker, sequence) == expected


def test_zone_events_can_be_switched_off() -> None:
    tracker = GeofenceConfig(confirm_seconds=0.0, zone_events=False).build(GUARD)
    assert feed(tracker, [IN, IN, IN, OUT, OUT, OUT, IN, IN, IN]) == ["violation", "back_inside"]


def test_moving_between_zones_emits_exit_and_enter_without_violation() -> None:
    a = result(Classification.INSIDE, 40.0, 1)
    both = FixResult(Classification.INSIDE, 1, 20.0, 10.0, ((1, 20.0), (2, 15.0)))
    b = FixResult(Classification.INSIDE, 2, 40.0, 10.0, ((1, -30.0), (2, 40.0)))
    tracker = GeofenceConfig(confirm_seconds=0.0).build(GUARD)
    events = feed(tracker, [a, a, a, both, both, both, b, b, b])
    assert events == ["enter", "enter", "exit"]


def test_no_approved_zone_is_outside() -> None:
    nothing = FixResult(Classification.OUTSIDE, None, -math.inf, 10.0, ())
    tracker = GeofenceConfig(confirm_seconds=0.0).build(GUARD)
    events = [e for i in range(3) for e in tracker.on_fix(T0 + timedelta(seconds=i), nothing)]
    assert [(e.kind, e.zone_id, e.distance_m) for e in events] == [(V, None, None)]


def test_out_of_order_and_duplicate_fixes_are_ignored() -> None:
    tracker = GeofenceConfig(confirm_fixes=3, confirm_seconds=0.0).build(GUARD)
    feed(tracker, [IN, IN, IN])
    late = T0 - timedelta(minutes=1)
    assert tracker.on_fix(late, OUT) == []
    assert tracker.on_fix(late, OUT) == []
    assert tracker.on_fix(T0 + timedelta(seconds=20), OUT) == []  # same time as the last fix
    state = tracker.snapshot()
    assert state.fence.pending is None  # the ignored fixes did not start a streak
    assert tracker.on_fix(T0 + timedelta(minutes=1), OUT) == []
    assert tracker.snapshot().fence.count == 1


def test_restart_from_snapshot_neither_loses_nor_repeats_a_violation() -> None:
    """Replay after restoring a snapshot (at-least-once input) gives the same events, once."""
    east, north = walk(np.random.default_rng(11))
    index = site_index()
    n = len(east)
    times = [T0 + timedelta(seconds=5 * i) for i in range(n)]
    lat = LAT + north / METRES_PER_DEGREE
    lon = LON + east / (METRES_PER_DEGREE * math.cos(math.radians(LAT)))
    batch = FixBatch(
        tenant_id=np.full(n, TENANT),
        lat=lat,
        lon=lon,
        accuracy_m=np.full(n, 10.0),
        time_s=np.array([t.timestamp() for t in times]),
        approved=np.zeros(n, dtype=np.int64),
        approved_sets=(frozenset({1}),),
    )
    results = index.query(batch).results()
    config = GeofenceConfig()
    reference = config.build(GUARD)
    expected = [e for t, r in zip(times, results, strict=True) for e in reference.on_fix(t, r)]
    assert kinds(expected) == [EN, EX, V, B, EN]
    violation_at = times.index(expected[2].time)
    # snapshot points: before, in the middle of, and after the violation's streak
    for cut in (violation_at - 10, violation_at - 2, violation_at, violation_at + 5):
        live = config.build(GUARD)
        emitted = [
            e for t, r in zip(times[:cut], results[:cut], strict=True) for e in live.on_fix(t, r)
        ]
        snapshot = live.snapshot()
        # the snapshot goes through its serialised forms, as it would in a recovery store
        restored_state = GuardFenceState.from_dict(json.loads(json.dumps(snapshot.to_dict())))
        assert pickle.loads(pickle.dumps(snapshot)) == snapshot == restored_state
        restored = config.build(GUARD, restored_state)
        # the source rewinds further than the snapshot: everything from 20 fixes earlier
        replay_from = max(0, cut - 20)
        emitted += [
            e
            for t, r in zip(times[replay_from:], results[replay_from:], strict=True)
            for e in restored.on_fix(t, r)
        ]
        assert emitted == expected, cut


def test_snapshot_is_a_copy() -> None:
    tracker = GeofenceConfig(confirm_seconds=0.0).build(GUARD)
    feed(tracker, [IN, IN])
    snap = tracker.snapshot()
    feed(tracker, [IN], start=T0 + timedelta(minutes=5))
    assert snap.zones[1].count == 2 and snap.zones[1].confirmed == "unknown"
    assert tracker.snapshot().zones[1].confirmed == "inside"
    with pytest.raises(ValueError, match="guard 123"):
        GeofenceConfig().build(999, snap)


def test_naive_times_are_rejected() -> None:
    tracker = GeofenceConfig().build(GUARD)
    with pytest.raises(ValueError, match="timezone-aware"):
        tracker.on_fix(datetime(2026, 1, 1), IN)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confirm_fixes": 0}, "confirm_fixes"),
        ({"confirm_fixes": 2.5}, "confirm_fixes"),
        ({"confirm_seconds": -1.0}, "confirm_seconds"),
        ({"confirm_seconds": math.inf}, "confirm_seconds"),
        ({"clear_fixes": 0}, "clear_fixes"),
        ({"clear_seconds": -0.5}, "clear_seconds"),
    ],
)
def test_config_validates(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GeofenceConfig(**kwargs)  # type: ignore[arg-type]


def test_clear_rule_can_differ_from_confirm_rule() -> None:
    config = GeofenceConfig(confirm_fixes=2, confirm_seconds=0.0, clear_fixes=4, zone_events=False)
    tracker = config.build(GUARD)
    assert feed(tracker, [OUT, OUT]) == ["violation"]
    assert feed(tracker, [IN, IN, IN], start=T0 + timedelta(minutes=1)) == []
    assert feed(tracker, [IN], start=T0 + timedelta(minutes=2)) == ["back_inside"]
