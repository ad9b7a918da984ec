"""Per-device windows: event time with bounded lateness, alerts, restart recovery."""

from __future__ import annotations

import copy
import math
import pickle
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.errors import ConfigError
from operators.geo import METRES_PER_DEGREE
from operators.heartbeat import HeartbeatConfig
from operators.immobility import ImmobilityConfig
from operators.records import (
    AlertCandidate,
    AlertResolution,
    DataRecord,
    DeviceAlert,
    Position,
    SensorReading,
    Telemetry,
)
from operators.registry import DeviceEntry, GuardEntry, RegistrySnapshot
from operators.trends import TrendConfig
from operators.windows import (
    AlertMemory,
    History,
    Sample,
    Subject,
    WindowEffects,
    WindowsConfig,
    sample_tuples,
    samples_of,
    subject_key,
    subjects_of,
)

T0 = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)
LAT, LON = 12.9716, 77.5946
DEVICE = Subject(1, "gd-1", "guard_device", 60.0, 3, 7, tracks_guard=True)
SENSOR = Subject(1, "temp-1", "sensor", 60.0, 3)
CONFIG = WindowsConfig(lateness_s=30.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def telemetry(
    t: float,
    battery: float | None = None,
    temperature: float | None = None,
    received: float | None = None,
    device: str = "gd-1",
) -> Telemetry:
    r = at(t if received is None else received)
    return Telemetry(device, at(t), battery, -60.0, temperature, f"{device}-{t}", r)


def reading(t: float, value: float, received: float | None = None) -> SensorReading:
    r = at(t if received is None else received)
    return SensorReading("temp-1", "temperature", at(t), value, None, f"s-{t}", r)


def fix(
    t: float, north_m: float = 0.0, east_m: float = 0.0, received: float | None = None
) -> Position:
    lat = LAT + north_m / METRES_PER_DEGREE
    lon = LON + east_m / (METRES_PER_DEGREE * math.cos(math.radians(LAT)))
    r = at(t if received is None else received)
    return Position(7, at(t), lat, lon, 5.0, 1, f"p-{t}", r)


@dataclass
class Log:
    """Every alert change, in the order the windows emitted them."""

    on_message: list[AlertResolution] = field(default_factory=list)
    alerts: list[AlertCandidate] = field(default_factory=list)
    resolutions: list[AlertResolution] = field(default_factory=list)
    changes: list[tuple[str, str, datetime]] = field(default_factory=list)

    def add(self, fx: WindowEffects) -> None:
        self.on_message += fx.on_message
        self.alerts += fx.alerts
        self.resolutions += fx.resolutions
        for c in [*fx.on_message, *fx.changes]:
            kind = "raise" if isinstance(c, AlertCandidate) else "resolve"
            self.changes.append((kind, c.alert_type, c.ts))

    def event_time(self) -> list[tuple[str, str, datetime]]:
        """The changes decided in event time (everything but the heartbeat), per alert type
        in the order they were decided (each metric is its own event-time stream)."""
        return sorted((c for c in self.changes if c[1] != "device_offline"), key=lambda c: c[1])


def feed(
    subject: Subject, records: list[DataRecord], config: WindowsConfig = CONFIG, tick: bool = True
) -> Log:
    """Feed records at their receipt times, run the timer like Bytewax would, then flush."""
    windows = config.build(subject)
    log = Log()
    for r in records:
        due = windows.next_due()
        if tick and due is not None and due < r.received_at:  # queued items go first
            log.add(windows.on_time(r.received_at))
        log.add(windows.on_record(r, r.received_at))
    log.add(windows.on_time(at(10**6)))
    return log


# -- configuration and plumbing -----------------------------------------------------------------


@pytest.mark.parametrize("lateness", [-1.0, float("nan"), float("inf"), True])
def test_bad_lateness_is_rejected(lateness: float) -> None:
    with pytest.raises(ConfigError, match="lateness_s"):
        WindowsConfig(lateness_s=lateness)


def test_lookback_covers_two_of_the_longest_window() -> None:
    config = WindowsConfig(lateness_s=10, immobility=ImmobilityConfig(still_minutes=20))
    assert config.lookback == timedelta(seconds=2 * 1200 + 10)


@pytest.mark.parametrize(
    ("record", "metrics"),
    [
        (telemetry(0, 80, 25.5), ["battery", "temperature"]),
        (telemetry(0, None, None), []),
        (telemetry(0, float("nan"), 20), ["temperature"]),
        (reading(0, 31), ["temperature"]),
        (SensorReading("d-1", "door", at(0), 1, "open", "m", at(0)), []),
        (fix(0), ["position"]),
        (DeviceAlert("gd-1", "panic", at(0), None, "", None, None, "m", at(0)), []),
    ],
)
def test_samples_of(record: DataRecord, metrics: list[str]) -> None:
    assert [s.metric for s in samples_of(record)] == metrics
    assert [t[1] for t in sample_tuples(record)] == metrics


def test_subjects_of_the_registry() -> None:
    registry = RegistrySnapshot(
        version=3,
        devices={
            "gd-1": DeviceEntry("gd-1", 1, 3, 7, "guard_device", 30),
            "pb-1": DeviceEntry("pb-1", 1, 3, 7, "panic_button", 600),
            "temp-1": DeviceEntry("temp-1", 1, 3, None, "sensor", 60),
        },
        guards={
            7: GuardEntry(7, 1, 3, "gd-1"),
            8: GuardEntry(8, 1, 3, None),
        },
    )
    subjects = subjects_of(registry, {7: False, 8: True})
    assert subjects == {
        "1:gd-1": Subject(1, "gd-1", "guard_device", 30.0, 3, 7, True, False),
        "1:pb-1": Subject(1, "pb-1", "panic_button", 600.0, 3, 7, False, False),
        "1:temp-1": Subject(1, "temp-1", "sensor", 60.0, 3, None, False, True),
        "1:guard:8": Subject(1, None, None, None, 3, 8, True, True),
    }
    assert subject_key(1, None, 8) == "1:guard:8"


# -- heartbeat through the windows --------------------------------------------------------------


def test_offline_is_derived_and_back_online_rides_on_the_message() -> None:
    windows = CONFIG.build(DEVICE)
    assert windows.on_record(telemetry(0, received=0), at(0)) == WindowEffects()
    assert windows.next_due() == at(180)
    assert not windows.on_time(at(179))
    fx = windows.on_time(at(180))
    [alert] = fx.alerts
    assert (alert.alert_type, alert.source_id, alert.severity, alert.ts) == (
        "device_offline", "gd-1", "high", at(180),
    )  # fmt: skip
    assert (alert.tenant_id, alert.site_id, alert.guard_id, alert.device_id) == (1, 3, 7, "gd-1")
    assert alert.details["reporting_interval_s"] == 60.0 and alert.details["intervals"] == 3
    derived = fx.derived(1)
    assert derived is not None and derived.alerts == [alert] and not derived.resolutions
    fx = windows.on_record(telemetry(300, received=300), at(300))
    assert fx.on_message == [
        AlertResolution(1, "gd-1", "device_offline", at(300), "device back online after 300 s")
    ]
    assert fx.derived(1) is None


def test_a_sensor_offline_is_medium_and_a_guard_without_device_has_no_heartbeat() -> None:
    log = feed(SENSOR, [reading(0, 20)])
    assert [(a.alert_type, a.severity) for a in log.alerts] == [("device_offline", "medium")]
    walker = Subject(1, None, None, None, 3, 8, tracks_guard=True)
    log = feed(walker, [replace(fix(0), guard_id=8)])
    assert log.changes == []


def test_interval_changes_apply_to_the_running_silence() -> None:
    windows = CONFIG.build(DEVICE)
    windows.on_record(telemetry(0), at(0))
    windows.rebind(replace(DEVICE, reporting_interval_s=600.0), at(10))
    assert windows.next_due() == at(1800)


def test_retire_resolves_what_was_raised() -> None:
    log = feed(DEVICE, [telemetry(30 * i, temperature=60) for i in range(12)])
    windows = CONFIG.build(DEVICE)
    for i in range(12):
        windows.on_record(telemetry(30 * i, temperature=60), at(30 * i))
    windows.on_time(at(5000))
    fx = windows.retire(at(6000))
    assert sorted(r.alert_type for r in fx.resolutions) == [
        "device_offline",
        "temperature_sustained",
    ]
    assert {a.alert_type for a in log.alerts} == {"device_offline", "temperature_sustained"}


# -- event time with bounded lateness -------------------------------------------------------------

# Temperature readings above 50 °C at 0, 100, 200 and 300 s, and one reading of 40 °C that
# arrives after the 300 s one (all delivered at once). Lateness 30 s.
LATE_CASES = {
    "in order: the dip breaks the run": (
        [(0, 55), (100, 55), (200, 55), (290, 40), (300, 55)],
        [],
        0,
    ),
    "a reading 10 s late is still counted": (
        [(0, 55), (100, 55), (200, 55), (300, 55), (290, 40)],
        [],
        0,
    ),
    "a reading 50 s late is left out (and counted as late)": (
        [(0, 55), (100, 55), (200, 55), (300, 55), (250, 40)],
        [("raise", "temperature_sustained", at(300))],
        1,
    ),
    "a duplicate of a released reading changes nothing": (
        [(0, 55), (100, 55), (200, 55), (300, 55), (0, 55), (301, 55)],
        [("raise", "temperature_sustained", at(300))],
        1,
    ),
    "a duplicate still pending is stored once": (
        [(0, 55), (100, 55), (200, 55), (300, 55), (300, 55)],
        [("raise", "temperature_sustained", at(300))],
        0,
    ),
}


@pytest.mark.parametrize("case", LATE_CASES.values(), ids=list(LATE_CASES))
def test_lateness_table(case: tuple[list[tuple[float, float]], list[object], int]) -> None:
    arrivals, expected, late = case
    windows = CONFIG.build(SENSOR)
    log = Log()
    for t, value in arrivals:
        log.add(windows.on_record(reading(t, value, received=1000), at(1000)))
    log.add(windows.on_time(at(2000)))
    assert log.event_time() == expected
    assert windows.state.late == late


def test_release_step_rounds_the_wake_up_not_the_decision() -> None:
    """With a release step the windows ask to be woken on the grid, at or after the exact
    instant; what a wake-up releases, and when, is decided by the watermark alone."""
    exact, stepped = CONFIG.build(SENSOR), replace(CONFIG, release_step_s=1.0).build(SENSOR)
    for windows in (exact, stepped):
        for i in range(11):
            windows.on_record(reading(30 * i, 55, received=30 * i + 1.25), at(30 * i + 1.25))
    due = exact.next_due()
    assert due == at(301.25) + timedelta(microseconds=1)
    first = stepped.next_due()
    assert first is not None and due <= first < due + timedelta(seconds=1)
    assert exact.on_time(first) == stepped.on_time(first)
    second = stepped.next_due()  # the reading at 300 s, due at 331.25 s
    assert second == first + timedelta(seconds=30)  # the same point of the grid
    raised = stepped.on_time(second)
    assert [a.alert_type for a in raised.alerts] == ["temperature_sustained"]
    assert exact.on_time(second) == raised


def test_release_grids_of_different_devices_are_spread_over_the_step() -> None:
    step = replace(CONFIG, release_step_s=1.0)
    dues = set()
    for n in range(20):
        subject = replace(SENSOR, device_id=f"temp-{n}")
        windows = step.build(subject)
        windows.on_record(reading(0, 20, received=0.5), at(0.5))
        due = windows.next_due()
        assert due is not None and at(30.5) < due <= at(31.5)
        dues.add(due)
    assert len(dues) > 10


def test_decisions_wait_for_the_watermark() -> None:
    """A reading is released lateness_s of processing time after the newest one arrived."""
    windows = CONFIG.build(SENSOR)
    for i in range(11):
        assert not windows.on_record(reading(30 * i, 55, received=30 * i + 1), at(30 * i + 1))
    # Newest event 300 s arrived at 301 s: watermark 270 s, advancing with the clock; a
    # reading is released once the watermark has passed it.
    tick = timedelta(microseconds=1)
    assert windows.watermark("temperature", at(301)) == at(270)
    assert windows.next_due() == at(301) + tick  # the reading at 270 s
    assert not windows.on_time(at(301) + tick)  # above for 270 s only
    assert windows.next_due() == at(331) + tick  # the reading at 300 s
    assert not windows.on_time(at(331))
    fx = windows.on_time(at(331) + tick)
    assert [(a.alert_type, a.ts) for a in fx.alerts] == [("temperature_sustained", at(300))]
    assert fx.alerts[0].details["since"] == at(0).isoformat()


def test_a_device_clock_running_ahead_does_not_make_real_readings_late() -> None:
    windows = CONFIG.build(SENSOR)
    windows.on_record(reading(86_400, 20, received=0), at(0))  # one timestamp a day ahead
    windows.on_record(reading(10, 55, received=10), at(10))
    assert windows.state.late == 0
    assert windows.watermark("temperature", at(10)) == at(-20)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3_600),
            st.integers(0, 100),
            st.floats(10, 60),
            st.integers(-50, 50),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 39),
)
@settings(max_examples=60, deadline=None)
def test_snapshot_is_unaffected_by_later_records(
    feed_spec: list[tuple[int, int, float, int]], cut: int
) -> None:
    """A snapshot equals a deep copy taken at the same moment, whatever the windows see next."""
    windows = CONFIG.build(DEVICE)
    records: list[DataRecord] = []
    for t, battery, temperature, north in feed_spec:
        records.append(telemetry(t, battery, temperature, received=t))
        records.append(fix(t, north_m=north, received=t))
    cut = min(cut, len(feed_spec)) * 2
    for r in records[:cut]:
        windows.on_record(r, r.received_at)
    snapshot, reference = windows.snapshot(), copy.deepcopy(windows.state)
    for r in records[cut:]:
        windows.on_record(r, r.received_at)
    windows.on_time(at(10**6))
    assert snapshot == reference


def test_snapshot_resumes_with_the_same_output() -> None:
    records = [reading(30 * i, 55 if i < 15 else 40) for i in range(20)]
    whole = feed(SENSOR, records)
    windows = CONFIG.build(SENSOR)
    log = Log()
    for r in records[:8]:
        log.add(windows.on_record(r, r.received_at))
    resumed = CONFIG.build(SENSOR, pickle.loads(pickle.dumps(windows.snapshot())))
    for r in records[8:]:
        log.add(resumed.on_record(r, r.received_at))
    log.add(resumed.on_time(at(10**6)))
    assert log.changes == whole.changes


# -- trends and man-down end to end ----------------------------------------------------------------


def test_battery_drain_raised_and_cleared_in_event_time() -> None:
    drain = [telemetry(60 * i, battery=100 - i) for i in range(16)]
    flat = [telemetry(960 + 60 * i, battery=85) for i in range(20)]
    log = feed(DEVICE, drain + flat)
    assert log.event_time() == [
        ("raise", "battery_drain", at(600)),
        ("resolve", "battery_drain", at(1560)),  # once flat readings fill a third
    ]
    assert log.alerts[0].severity == "medium" and log.alerts[0].source_id == "gd-1"


def test_man_down_raised_and_resolved_for_the_guard() -> None:
    still = [fix(60 * i, 2 * math.sin(i), 2 * math.cos(i)) for i in range(12)]
    moving = [fix(720 + 60 * i, 0, 100 * (i + 1)) for i in range(3)]
    log = feed(DEVICE, still + moving)
    assert log.event_time() == [("raise", "man_down", at(600)), ("resolve", "man_down", at(720))]
    alert = log.alerts[0]
    assert (alert.source_id, alert.severity, alert.guard_id) == ("guard:7", "high", 7)
    assert alert.lat == pytest.approx(LAT, abs=1e-4)


def test_each_metric_has_its_own_event_time_stream() -> None:
    """GPS fixes the device buffered arrive after a quarter of an hour of live telemetry:
    they are not late, because each metric's watermark follows its own readings."""
    live = [telemetry(60 * i, battery=90) for i in range(16)]
    buffered = [replace(fix(60 * i), received_at=at(960)) for i in range(12)]
    log = feed(DEVICE, live + buffered)
    assert log.event_time() == [("raise", "man_down", at(600))]


def test_positions_of_a_device_that_does_not_carry_the_guard_are_ignored() -> None:
    panic = Subject(1, "pb-1", "panic_button", 60.0, 3, 7, tracks_guard=False)
    log = feed(panic, [fix(60 * i) for i in range(15)])
    assert log.event_time() == []


def test_going_off_shift_resolves_man_down() -> None:
    windows = CONFIG.build(DEVICE)
    log = Log()
    for i in range(12):
        log.add(windows.on_record(fix(60 * i), at(60 * i)))
    log.add(windows.on_time(at(800)))
    log.add(windows.rebind(replace(DEVICE, on_shift=False), at(900)))
    assert log.event_time() == [("raise", "man_down", at(600)), ("resolve", "man_down", at(900))]
    assert log.resolutions[-1].note == "guard off shift"


# -- invariants --------------------------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> list[DataRecord]:
    """A device's readings: battery, temperature and fixes every 10-90 s, random walks."""
    n = draw(st.integers(min_value=1, max_value=80))
    records: list[DataRecord] = []
    t, battery, temperature, north = 0.0, 100.0, 45.0, 0.0
    for _ in range(n):
        t += draw(st.integers(min_value=10, max_value=90))
        battery = max(0.0, battery - draw(st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0, -5.0])))
        temperature += draw(st.sampled_from([-4.0, -1.0, 0.0, 1.0, 4.0]))
        north += draw(st.sampled_from([0.0, 0.0, 2.0, 40.0]))
        if draw(st.booleans()):
            records.append(telemetry(t, battery, temperature))
        else:
            records.append(fix(t, north, 0.0))
    return records


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.data())
def test_out_of_order_within_the_lateness_gives_the_same_alerts(
    records: list[DataRecord], data: st.DataObject
) -> None:
    """Windows never lose an event: delaying each reading by less than the lateness (so they
    arrive out of order) yields exactly the alerts of the in-order stream."""
    in_order = feed(DEVICE, records)
    delays = data.draw(
        st.lists(
            st.floats(min_value=0, max_value=29.9),
            min_size=len(records),
            max_size=len(records),
        )
    )
    delayed = [
        replace(r, received_at=r.ts + timedelta(seconds=d))
        for r, d in zip(records, delays, strict=True)
    ]
    delayed.sort(key=lambda r: r.received_at)
    shuffled = feed(DEVICE, delayed)
    assert shuffled.event_time() == in_order.event_time()
    assert all(r.received_at >= r.ts for r in delayed)


@settings(max_examples=100, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=5))
def test_redelivered_readings_change_nothing(records: list[DataRecord], repeat: int) -> None:
    """Duplicates (a redelivery of what was already processed) leave the alerts unchanged."""
    once = feed(DEVICE, records)
    again: list[DataRecord] = []
    for i, r in enumerate(records):
        again.append(r)
        for earlier in records[max(0, i - repeat) : i]:
            again.append(replace(earlier, received_at=r.received_at))
    twice = feed(DEVICE, again)
    assert twice.event_time() == once.event_time()


class AlertTable:
    """The storage contract in miniature: one open alert per (source, type), repeats fold,
    resolutions close the open one."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def open(self, source: str, alert_type: str) -> dict[str, object] | None:
        for row in self.rows:
            if (row["source"], row["type"], row["closed_at"]) == (source, alert_type, None):
                return row
        return None

    def apply(self, fx: WindowEffects) -> None:
        """Changes in the order they were decided."""
        for c in [*fx.on_message, *fx.changes]:
            row = self.open(c.source_id, c.alert_type)
            if isinstance(c, AlertResolution):
                if row is not None:
                    row["closed_at"] = c.ts
            elif row is None:
                self.rows.append({"source": c.source_id, "type": c.alert_type,
                                  "first_seen": c.ts, "closed_at": None, "count": 1})  # fmt: skip
            else:
                row["count"] = int(row["count"]) + 1  # type: ignore[call-overload]

    def memory(self) -> dict[str, AlertMemory]:
        latest: dict[str, AlertMemory] = {}
        for row in self.rows:
            closed = row["closed_at"]
            latest[str(row["type"])] = AlertMemory(
                closed is None,
                row["first_seen"],  # type: ignore[arg-type]
                closed,  # type: ignore[arg-type]
            )
        return latest

    def episodes(self) -> list[tuple[object, ...]]:
        """(type, first seen, closed at, count) per alert, by type, oldest first."""
        rows = [(r["type"], r["first_seen"], r["closed_at"], r["count"]) for r in self.rows]
        return sorted(rows, key=lambda e: (str(e[0]), e[1]))  # type: ignore[arg-type]


def history_of(records: list[DataRecord], table: AlertTable) -> History:
    samples = tuple(s for r in records for s in samples_of(r))
    return History(
        last_heard=max((r.received_at for r in records), default=None),
        last_event=max((r.ts for r in records), default=None),
        samples=samples,
        alerts=table.memory(),
    )


NO_HEARTBEAT = replace(DEVICE, reporting_interval_s=None)


def run_with_restart(
    records: list[DataRecord], crash_at: int, redelivered: int, lost: int = 0
) -> tuple[AlertTable, AlertTable]:
    """The same stream without and with a crash: the readings before ``crash_at`` are stored
    and so are their alert changes, except the last ``lost`` batches of changes (in flight
    when the flow died); then the state is rebuilt from the table and the stored readings, and
    the last ``redelivered`` readings come again (stored, not yet acknowledged)."""
    whole = AlertTable()
    windows = CONFIG.build(NO_HEARTBEAT)
    for r in records:
        whole.apply(windows.on_time(r.received_at))
        whole.apply(windows.on_record(r, r.received_at))
    whole.apply(windows.on_time(at(10**7)))

    table = AlertTable()
    windows = CONFIG.build(NO_HEARTBEAT)
    emitted: list[WindowEffects] = []
    for r in records[:crash_at]:
        emitted += [windows.on_time(r.received_at), windows.on_record(r, r.received_at)]
    emitted = [fx for fx in emitted if fx]
    for fx in emitted[: max(0, len(emitted) - lost)]:
        table.apply(fx)
    now = records[crash_at - 1].received_at + timedelta(seconds=5) if crash_at else at(0)
    history = history_of(records[:crash_at], table)
    resumed, fx = CONFIG.resume(NO_HEARTBEAT, history, now, started_at=now)
    table.apply(fx)
    for r in [*records[max(0, crash_at - redelivered) : crash_at], *records[crash_at:]]:
        r = replace(r, received_at=max(r.received_at, now))
        table.apply(resumed.on_time(r.received_at))
        table.apply(resumed.on_record(r, r.received_at))
    table.apply(resumed.on_time(at(10**7)))
    return whole, table


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.data())
def test_a_restart_neither_misses_nor_repeats_an_alert(
    records: list[DataRecord], data: st.DataObject
) -> None:
    crash_at = data.draw(st.integers(min_value=0, max_value=len(records)))
    redelivered = data.draw(st.integers(min_value=0, max_value=3))
    lost = data.draw(st.integers(min_value=0, max_value=2))
    whole, restarted = run_with_restart(records, crash_at, redelivered, lost)
    assert [e[:3] for e in restarted.episodes()] == [e[:3] for e in whole.episodes()]
    assert all(e[3] == 1 for e in restarted.episodes())  # never raised twice


# -- restart reconciliation, case by case -------------------------------------------------------


def resume(
    subject: Subject, history: History, now: float = 1000, started: float = 900
) -> tuple[object, Log]:
    windows, fx = CONFIG.resume(subject, history, at(now), at(started))
    log = Log()
    log.add(fx)
    return windows, log


def test_resume_open_offline_alert_stays_offline_until_the_next_message() -> None:
    history = History(at(100), at(100), (), {"device_offline": AlertMemory(True, at(280))})
    windows, log = resume(DEVICE, history)
    assert log.changes == []
    assert windows.offline and windows.next_due() is None  # type: ignore[attr-defined]
    assert not windows.on_time(at(5000))  # type: ignore[attr-defined]
    fx = windows.on_record(telemetry(5000), at(5000))  # type: ignore[attr-defined]
    assert [r.alert_type for r in fx.on_message] == ["device_offline"]


def test_resume_resolves_an_offline_alert_the_device_has_answered() -> None:
    history = History(at(400), at(400), (), {"device_offline": AlertMemory(True, at(280))})
    windows, log = resume(DEVICE, history)
    assert log.changes == [("resolve", "device_offline", at(400))]
    assert not windows.offline  # type: ignore[attr-defined]


def test_resume_measures_silence_from_the_restart() -> None:
    history = History(at(100), at(100))
    windows, log = resume(DEVICE, history, now=1000, started=900)
    assert log.changes == []
    assert windows.next_due() == at(900 + 180)  # type: ignore[attr-defined]
    history = History(at(850), at(850))
    windows, _ = resume(DEVICE, history, now=1000, started=900)
    assert windows.next_due() == at(900 + 180)  # type: ignore[attr-defined]
    history = History(at(990), at(990))
    windows, _ = resume(DEVICE, history, now=1000, started=900)
    assert windows.next_due() == at(990 + 180)  # type: ignore[attr-defined]


def test_resume_does_not_repeat_an_offline_alert_someone_closed() -> None:
    closed = AlertMemory(False, at(280), at(500))
    windows, log = resume(DEVICE, History(at(100), at(100), (), {"device_offline": closed}))
    assert log.changes == [] and windows.offline  # type: ignore[attr-defined]
    # An older episode (closed before the device's last message) does not count.
    older = AlertMemory(False, at(20), at(50))
    windows, _ = resume(DEVICE, History(at(100), at(100), (), {"device_offline": older}))
    assert not windows.offline  # type: ignore[attr-defined]


def test_resume_never_heard_device_waits_for_a_message() -> None:
    windows, log = resume(DEVICE, History())
    assert log.changes == [] and windows.next_due() is None  # type: ignore[attr-defined]


HOT = tuple(Sample(at(30 * i), "temperature", 60.0) for i in range(12))  # above for 330 s
COOLED = (*HOT, Sample(at(400), "temperature", 30.0))


@pytest.mark.parametrize(
    ("samples", "memory", "expected"),
    [
        (HOT, None, [("raise", "temperature_sustained", at(300))]),
        (HOT, AlertMemory(True, at(300)), []),
        (HOT, AlertMemory(False, at(300), at(320)), []),  # someone closed this episode
        (
            HOT,
            AlertMemory(False, at(-900), at(-600)),
            [("raise", "temperature_sustained", at(300))],
        ),
        (COOLED, AlertMemory(True, at(300)), [("resolve", "temperature_sustained", at(400))]),
        (COOLED, AlertMemory(False, at(300), at(400)), []),
        # An episode that began and ended unrecorded (still waiting for the watermark, or its
        # changes lost at the crash) is reported after the fact.
        (
            COOLED,
            None,
            [
                ("raise", "temperature_sustained", at(300)),
                ("resolve", "temperature_sustained", at(400)),
            ],
        ),
        (HOT[:3], AlertMemory(True, at(-100)), []),  # too little data to contradict the alert
    ],
)
def test_resume_reconciles_trend_alerts(
    samples: tuple[Sample, ...], memory: AlertMemory | None, expected: list[object]
) -> None:
    alerts = {} if memory is None else {"temperature_sustained": memory}
    last = max(s.ts for s in samples)
    history = History(last, last, samples, alerts)
    windows, log = resume(SENSOR, history, now=2000, started=2000)
    assert log.event_time() == expected
    # Stored readings are final: a redelivered one is late, a new one counts.
    windows.on_record(reading((last - T0).total_seconds(), 60), at(2001))  # type: ignore[attr-defined]
    assert windows.state.late == 1  # type: ignore[attr-defined]


def test_resume_replays_man_down_and_keeps_the_anchor() -> None:
    fixes = tuple(samples_of(fix(60 * i))[0] for i in range(8))  # still for 7 minutes
    history = History(at(420), at(420), fixes, {})
    windows, log = resume(DEVICE, history, now=430, started=430)
    assert log.changes == []
    log = Log()
    for i in range(8, 11):
        log.add(windows.on_record(fix(60 * i), at(60 * i)))  # type: ignore[attr-defined]
    log.add(windows.on_time(at(5000)))  # type: ignore[attr-defined]
    assert log.event_time() == [("raise", "man_down", at(600))]


def test_configs_reach_the_detectors() -> None:
    config = WindowsConfig(
        lateness_s=0,
        heartbeat=HeartbeatConfig(intervals=1),
        trends=TrendConfig(temperature_high=20, temperature_sustained_s=50),
        immobility=ImmobilityConfig(radius_m=5, still_minutes=1),
    )
    log = feed(SENSOR, [reading(0, 25), reading(50, 25)], config)
    assert log.changes == [
        ("raise", "temperature_sustained", at(50)),
        ("raise", "device_offline", at(110)),
    ]
