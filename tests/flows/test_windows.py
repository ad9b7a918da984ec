"""The windows step in a real Bytewax dataflow (``bytewax.testing``): timers, keys, recovery.

The dataflow is the ingest flow's windows section: key by subject, ``op.stateful`` with
:class:`~flows.windows.WindowStep`, unkey. Timers run on the wall clock, so the devices here
report every 0.1 s and ``TestingSource.PAUSE`` lets the clock run without input.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.envelope import Envelope
from flows.windows import (
    PASS_KEY,
    RosterSource,
    RosterTick,
    WindowStep,
    shard_of,
    window_key,
    windows_step,
)
from operators.decode import dead_letter
from operators.geo import METRES_PER_DEGREE
from operators.heartbeat import HeartbeatConfig
from operators.records import (
    DeadLetter,
    DerivedAlerts,
    Enriched,
    Position,
    SensorReading,
    SystemHealth,
    Telemetry,
)
from operators.trends import TrendConfig
from operators.windows import AlertMemory, History, Subject, WindowsConfig

LAT, LON = 12.9716, 77.5946
FAST = Subject(1, "gd-1", "guard_device", 0.1, 3, 7, tracks_guard=True)
SLOW = Subject(1, "gd-2", "guard_device", 3600.0, 3, 8, tracks_guard=True)
SENSOR = Subject(1, "temp-1", "sensor", 3600.0, 3)
CONFIG = WindowsConfig(lateness_s=0.1, heartbeat=HeartbeatConfig(intervals=2))


class Directory:
    def __init__(self, *subjects: Subject) -> None:
        self._subjects = {s.key: s for s in subjects}

    def subjects(self) -> Mapping[str, Subject]:
        return self._subjects


class Memory:
    """A database that remembers what the test says (HistorySource)."""

    def __init__(self, histories: Mapping[str, History]) -> None:
        self.histories = histories
        self.loaded: list[str] = []

    def load(self, subject: Subject, now: datetime) -> History | None:
        self.loaded.append(subject.key)
        return self.histories.get(subject.key, History())


def now() -> datetime:
    return datetime.now(UTC)


def envelope(item: Enriched | DeadLetter) -> Envelope:
    return Envelope("t", b"{}", None, item)


def telemetry(subject: Subject, ts: datetime | None = None, **values: float) -> Envelope:
    received = now()
    assert subject.device_id is not None
    record = Telemetry(
        subject.device_id, ts or received, values.get("battery"), None,
        values.get("temperature"), f"m-{received.timestamp()}-{ts}", received,
    )  # fmt: skip
    return envelope(Enriched(record, 1, 3, subject.guard_id, subject.device_id))


def gps(subject: Subject, ts: datetime, east_m: float = 0.0) -> Envelope:
    assert subject.guard_id is not None
    lon = LON + east_m / (METRES_PER_DEGREE * math.cos(math.radians(LAT)))
    record = Position(subject.guard_id, ts, LAT, lon, 5.0, 1, f"p-{ts}", now())
    return envelope(Enriched(record, 1, 3, subject.guard_id, subject.device_id))


def lazily(*steps: object) -> Iterator[object]:
    """Items made when the source reaches them (so receipt times are real)."""
    for step in steps:
        yield step() if callable(step) else step


def run(
    items: Iterable[object],
    step: WindowStep,
    recovery: RecoveryConfig | None = None,
) -> list[Envelope]:
    flow = Dataflow("windows_test")
    inbound = op.input("in", flow, TestingSource(items))
    # Envelope | RosterTick
    windowed = windows_step("windows", inbound, step)
    # Envelope + back-online resolution | derived(DerivedAlerts)
    out: list[Envelope] = []
    op.output("out", windowed, TestingSink(out))
    run_main(flow, epoch_interval=timedelta(milliseconds=50), recovery_config=recovery)
    return out


def derived_changes(out: list[Envelope]) -> list[tuple[str, str, str]]:
    """(raise | resolve, alert type, source) of the derived envelopes, in output order."""
    changes = []
    for env in out:
        if isinstance(env.item, DerivedAlerts):
            assert env.token is None and env.topic == ""
            changes += [("raise", a.alert_type, a.source_id) for a in env.item.alerts]
            changes += [("resolve", r.alert_type, r.source_id) for r in env.item.resolutions]
    return changes


def messages(out: list[Envelope]) -> list[Envelope]:
    return [env for env in out if not isinstance(env.item, DerivedAlerts)]


def test_silence_raises_offline_on_the_timer_and_the_next_message_resolves_it() -> None:
    step = WindowStep(CONFIG, Directory(FAST), None)
    out = run(
        lazily(lambda: telemetry(FAST), TestingSource.PAUSE(timedelta(seconds=0.6)),
               lambda: telemetry(FAST)),
        step,
    )  # fmt: skip
    assert derived_changes(out) == [("raise", "device_offline", "gd-1")]
    [alert] = next(e.item for e in out if isinstance(e.item, DerivedAlerts)).alerts
    assert alert.severity == "high" and alert.tenant_id == 1
    first, second = messages(out)
    assert isinstance(first.item, Enriched) and not first.item.resolutions
    assert isinstance(second.item, Enriched)
    assert [(r.alert_type, r.source_id) for r in second.item.resolutions] == [
        ("device_offline", "gd-1")
    ]
    # The alert left between the two messages: raised by the timer, not by a message.
    assert out.index(second) > [isinstance(e.item, DerivedAlerts) for e in out].index(True)


def test_a_roster_tick_watches_a_device_that_never_speaks_again() -> None:
    """After a restart the roster builds every device's state, so a device that stays silent
    is still reported; one whose offline alert is open is not reported twice."""
    silent = Subject(1, "gd-3", "guard_device", 0.1, 3, 9)
    known = Subject(1, "gd-4", "panic_button", 0.1, 3, None)
    long_ago = now() - timedelta(hours=1)
    memory = Memory(
        {
            silent.key: History(long_ago, long_ago),
            known.key: History(
                long_ago, long_ago, (), {"device_offline": AlertMemory(True, long_ago)}
            ),
        }
    )
    step = WindowStep(CONFIG, Directory(silent, known), memory)
    out = run(
        [RosterTick(silent), RosterTick(known), TestingSource.PAUSE(timedelta(seconds=0.6))], step
    )
    assert derived_changes(out) == [("raise", "device_offline", "gd-3")]
    assert sorted(memory.loaded) == ["1:gd-3", "1:gd-4"]


def test_a_device_removed_from_the_registry_has_its_alerts_resolved() -> None:
    step = WindowStep(CONFIG, Directory(FAST), None)
    out = run(
        lazily(lambda: telemetry(FAST), TestingSource.PAUSE(timedelta(seconds=0.6)),
               RosterTick(FAST, removed=True)),
        step,
    )  # fmt: skip
    assert derived_changes(out) == [
        ("raise", "device_offline", "gd-1"),
        ("resolve", "device_offline", "gd-1"),
    ]


def test_trends_and_man_down_leave_as_derived_alerts_stamped_with_event_time() -> None:
    """Twenty minutes of readings replayed in a burst: alerts carry when things happened."""
    start = now().replace(microsecond=0) - timedelta(hours=1)
    burst: list[object] = []
    for i in range(21):
        ts = start + timedelta(minutes=i)
        burst.append(telemetry(SLOW, ts, battery=100 - 2 * i))  # 120 %/h
        burst.append(gps(SLOW, ts, east_m=math.sin(i)))  # standing still
        burst.append(telemetry(SENSOR, ts, temperature=70 if 5 <= i <= 15 else 20))
    burst.append(TestingSource.PAUSE(timedelta(seconds=0.5)))
    step = WindowStep(CONFIG, Directory(SLOW, SENSOR), None)
    out = run(burst, step)
    alerts = {
        (a.alert_type, a.source_id): a
        for env in out
        if isinstance(env.item, DerivedAlerts)
        for a in env.item.alerts
    }
    assert set(alerts) == {
        ("battery_drain", "gd-2"),
        ("man_down", "guard:8"),
        ("temperature_sustained", "temp-1"),
    }
    assert alerts[("battery_drain", "gd-2")].ts == start + timedelta(minutes=10)
    assert alerts[("man_down", "guard:8")].ts == start + timedelta(minutes=10)
    assert alerts[("temperature_sustained", "temp-1")].ts == start + timedelta(minutes=10)
    resolved = [c for c in derived_changes(out) if c[0] == "resolve"]
    assert resolved == [("resolve", "temperature_sustained", "temp-1")]
    assert len(messages(out)) == 63


def test_items_no_window_watches_pass_through_untouched() -> None:
    health = Enriched(SystemHealth("api", now(), {"ok": True}, "h", now()), 0)
    letter = dead_letter("x/y", b"{}", now(), "unknown_topic", "no such topic")
    door = Enriched(
        SensorReading("door-9", "door", now(), 1, "open", "d", now()), 1, 3, None, "door-9"
    )
    items = [envelope(health), envelope(letter), envelope(door)]
    assert [window_key(e) for e in items] == [PASS_KEY, PASS_KEY, "1:door-9"]
    step = WindowStep(CONFIG, Directory(), None)
    out = run(items, step)
    assert sorted(id(e) for e in out) == sorted(id(e) for e in items)
    assert derived_changes(out) == []


@pytest.mark.parametrize("snapshots", [False, True])
def test_snapshots_are_taken_only_when_switched_on(snapshots: bool) -> None:
    """Without Bytewax recovery a snapshot would be a copy made for nothing at every epoch."""
    logic = WindowStep(CONFIG, Directory(SENSOR), None, snapshots=snapshots).build(None)
    logic.on_batch([telemetry(SENSOR, now(), temperature=20)])
    state = logic.snapshot()
    assert (state is not None) == snapshots
    if state is not None:
        assert [s.subject for s in state.values()] == [SENSOR]


def test_bytewax_recovery_resumes_the_windows_from_snapshots(tmp_path: Path) -> None:
    """With Bytewax recovery the state comes back from the snapshot: a temperature run that
    began before the abort is still one run after it (raised once, at the right time)."""
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    start = now().replace(microsecond=0) - timedelta(hours=1)
    config = WindowsConfig(lateness_s=0, trends=TrendConfig(temperature_sustained_s=300))

    def hot(i: int) -> Envelope:
        return telemetry(SENSOR, start + timedelta(seconds=30 * i), temperature=60)

    items: list[object] = [hot(i) for i in range(6)]
    items += [TestingSource.PAUSE(timedelta(seconds=0.3)), TestingSource.ABORT()]
    items += [hot(i) for i in range(6, 12)]
    items.append(TestingSource.PAUSE(timedelta(seconds=0.3)))
    step = WindowStep(config, Directory(SENSOR), None, snapshots=True)
    first = run(items, step, recovery)
    assert derived_changes(first) == []
    second = run(items, WindowStep(config, Directory(SENSOR), None, snapshots=True), recovery)
    alerts = [a for e in second if isinstance(e.item, DerivedAlerts) for a in e.item.alerts]
    assert [(a.alert_type, a.ts) for a in alerts] == [
        ("temperature_sustained", start + timedelta(seconds=300))
    ]


def test_the_roster_source_emits_new_changed_and_removed_subjects() -> None:
    directory = Directory(FAST, SLOW)
    part = RosterSource(directory, 0.1).build_part("roster", "roster", None)
    assert sorted(t.subject.key for t in part.next_batch()) == ["1:gd-1", "1:gd-2"]
    assert part.next_batch() == []  # not due yet
    time.sleep(0.15)
    assert part.next_batch() == []  # due, nothing changed
    off_shift = replace(SLOW, on_shift=False)
    directory._subjects = {off_shift.key: off_shift, SENSOR.key: SENSOR}
    time.sleep(0.15)
    ticks = part.next_batch()
    assert sorted(ticks, key=lambda t: t.subject.key) == [
        RosterTick(FAST, removed=True),
        RosterTick(off_shift),
        RosterTick(SENSOR),
    ]
    assert part.next_awake() > now()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def heard_at(subject: Subject, at: datetime) -> Envelope:
    assert subject.device_id is not None
    record = Telemetry(subject.device_id, at, None, -70, None, f"h-{at}", at)
    return envelope(Enriched(record, 1, 3, subject.guard_id, subject.device_id))


def offline_sources(out: Iterable[Envelope]) -> list[str]:
    return [a.source_id for e in out if isinstance(e.item, DerivedAlerts) for a in e.item.alerts]


def test_one_shard_keeps_each_subjects_timer() -> None:
    """Subjects of one shard go offline each at their own time, in deadline order; a message
    that moves a deadline replaces the subject's earlier timer."""
    quick = Subject(1, "q-1", "sensor", 10.0, 3)
    slow = Subject(1, "s-1", "sensor", 30.0, 3)
    clock = Clock()
    config = WindowsConfig(lateness_s=0, heartbeat=HeartbeatConfig(intervals=2))
    logic = WindowStep(config, Directory(quick, slow), None, now=clock).build(None)
    start = clock.now
    out, _ = logic.on_batch([heard_at(quick, start), heard_at(slow, start)])
    assert offline_sources(out) == []
    assert logic.notify_at() == start + timedelta(seconds=20)
    clock.now = start + timedelta(seconds=15)
    logic.on_batch([heard_at(quick, clock.now)])  # moves q-1's deadline to +35 s
    assert logic.notify_at() == start + timedelta(seconds=35)
    clock.now = start + timedelta(seconds=20)
    assert offline_sources(logic.on_notify()[0]) == []  # the replaced timer does nothing
    clock.now = start + timedelta(seconds=36)
    out, _ = logic.on_notify()
    assert offline_sources(out) == ["q-1"]  # s-1 was due at +60 s
    assert logic.notify_at() == start + timedelta(seconds=60)
    clock.now = start + timedelta(seconds=61)
    assert offline_sources(logic.on_notify()[0]) == ["s-1"]
    assert logic.notify_at() is None


def test_a_removed_subject_leaves_the_shard_and_its_timer_with_it() -> None:
    quick = Subject(1, "q-1", "sensor", 10.0, 3)
    clock = Clock()
    logic = WindowStep(CONFIG, Directory(quick), None, now=clock).build(None)
    logic.on_batch([heard_at(quick, clock.now)])
    assert logic.notify_at() is not None
    logic.on_batch([RosterTick(quick, removed=True)])
    assert logic.notify_at() is None
    assert logic.on_notify()[0] == []


@pytest.mark.parametrize("shards", [1, 2, 5])
def test_shard_of_is_stable_and_in_range(shards: int) -> None:
    keys = [f"1:dev-{i}" for i in range(200)]
    assigned = [shard_of(k, shards) for k in keys]
    assert assigned == [shard_of(k, shards) for k in keys]
    assert set(assigned) == {str(i) for i in range(shards)}


def test_subjects_spread_over_shards_decide_the_same_as_one_shard() -> None:
    start = now().replace(microsecond=0) - timedelta(hours=1)
    sensors = [Subject(1, f"temp-{i}", "sensor", 3600.0, 3) for i in range(6)]

    def burst() -> list[object]:
        items: list[object] = []
        for m in range(12):
            for i, subject in enumerate(sensors):
                hot = i % 2 == 0 and m >= 2
                items.append(
                    telemetry(subject, start + timedelta(minutes=m), temperature=70 if hot else 20)
                )
        items.append(TestingSource.PAUSE(timedelta(seconds=0.5)))
        return items

    results = []
    for shards in (1, 3):
        step = WindowStep(CONFIG, Directory(*sensors), None, shards=shards)
        results.append(sorted(derived_changes(run(burst(), step))))
    assert results[0] == results[1]
    assert results[0] == [("raise", "temperature_sustained", f"temp-{i}") for i in (0, 2, 4)]
