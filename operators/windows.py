"""Per-device windows: heartbeat, telemetry trends and man-down, with restart recovery.

One :class:`DeviceWindows` per *subject* (a registered device, or a guard without one) holds
the device's :mod:`~operators.heartbeat`, its :mod:`~operators.trends` and, for the device
that carries a guard's GPS, the guard's :mod:`~operators.immobility` detector. It turns their
events into alert candidates and resolutions. Pure: time is passed in as ``now``.

Two clocks
    *Silence* (heartbeat) is measured in processing time, see :mod:`operators.heartbeat`.
    *Trends and man-down* are decided in **event time** with bounded lateness, so a backlog the
    broker replays, or readings a device buffered, give the alerts they describe and their
    alerts carry the time the condition happened, not when the flow saw it.

Event time with bounded lateness (``lateness_s``, ``NOC_WINDOW_LATENESS_S``)
    Samples (battery, temperature and GPS readings) wait in a reorder buffer until their
    stream's watermark has passed them, then are *released* to the detectors in event-time
    order (ties broken by value, so the order is total). Each metric is its own stream with
    its own watermark, so a device that sends buffered GPS fixes after live telemetry loses
    neither. The watermark follows Bytewax's ``EventClock``: it is the latest event time seen
    minus the lateness, and it advances with the processing clock while no newer event
    arrives. So a sample is accepted if it arrives at most ``lateness_s`` later (in processing
    time) than the newest sample of its stream did, relative to their event times; anything
    later is counted in ``late`` and left out of the windows (it is still stored, and still
    proves the device alive). Consequences, tested as invariants:
    feeding samples in any order that stays within the lateness releases the same sequence, so
    gives the same alerts; re-feeding a sample already released is a no-op. Decisions are
    therefore delayed by the lateness. An event time later than the message's receipt (a device
    clock running ahead) advances the watermark only to the receipt time, so one bogus
    timestamp cannot make a day of real samples late.

Restart (``WindowsConfig.resume``)
    State is rebuilt from what the database remembers (:class:`History`): the latest stored
    message of the subject (processing and event time), the samples of the last few windows,
    and the latest alert of each type. Stored samples are replayed (all final), detectors start
    *raised* where an alert is open, and the replay is reconciled with the alert table (alert
    times are event times, so a replay reproduces them):

    - episodes newer than the latest alert of their type (their changes were still waiting
      for the watermark, or were lost at the crash) are raised, and resolved if they ended,
      unless that alert was closed by someone after the episode began (not raised twice);
    - an open alert whose condition the replay shows ended is resolved;
    - a device with an open ``device_offline`` alert stays offline (not raised twice) unless a
      message was stored after the alert opened (then it is resolved); otherwise its silence is
      measured from the later of its last stored message and the flow's start, so a device that
      went quiet while the flow was down is still reported (not missed), without calling
      every device offline while the broker is still replaying the backlog.

    Samples at or before the last stored one of their metric are not fed again (redelivered
    duplicates); redelivered messages that were never stored are processed normally.
"""

from __future__ import annotations

import bisect
import copy
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from operators import heartbeat as hb
from operators import immobility as imm
from operators import trends as tr
from operators.errors import ConfigError
from operators.fence_alerts import guard_source
from operators.records import (
    AlertCandidate,
    AlertResolution,
    DataRecord,
    DerivedAlerts,
    Position,
    SensorReading,
    Telemetry,
    alert_for,
)
from operators.registry import RegistrySnapshot

__all__ = [
    "ALERT_TYPES",
    "BATTERY",
    "POSITION",
    "TEMPERATURE",
    "AlertMemory",
    "DeviceWindows",
    "DeviceWindowsState",
    "History",
    "Sample",
    "StreamState",
    "Subject",
    "WindowEffects",
    "WindowsConfig",
    "sample_tuples",
    "samples_of",
    "subject_key",
    "subjects_of",
]

BATTERY = "battery"
TEMPERATURE = "temperature"
POSITION = "position"

ALERT_TYPES = (hb.ALERT_TYPE, tr.BATTERY_DRAIN, tr.TEMPERATURE_SUSTAINED, imm.ALERT_TYPE)
"""The alert types this module raises and resolves."""


def subject_key(tenant_id: int, device_id: str | None, guard_id: int | None) -> str:
    """The key of a subject's state: its device, or the guard when it has no device."""
    if device_id is not None:
        return f"{tenant_id}:{device_id}"
    return f"{tenant_id}:guard:{guard_id}"


@dataclass(frozen=True)
class Subject:
    """What the windows of one key watch, from the registry.

    ``reporting_interval_s`` None means no heartbeat (a guard without a device).
    ``tracks_guard``: the guard's positions arrive through this device (man-down applies).
    """

    tenant_id: int
    device_id: str | None = None
    kind: str | None = None
    reporting_interval_s: float | None = None
    site_id: int | None = None
    guard_id: int | None = None
    tracks_guard: bool = False
    on_shift: bool = True

    @property
    def key(self) -> str:
        return subject_key(self.tenant_id, self.device_id, self.guard_id)


def subjects_of(registry: RegistrySnapshot, on_shift: Mapping[int, bool]) -> dict[str, Subject]:
    """Every subject the registry describes, by key. A device tracks its guard when it is the
    guard's GPS device (the one enrichment attributes the guard's positions to)."""
    subjects: dict[str, Subject] = {}
    for d in registry.devices.values():
        guard = registry.guards.get(d.guard_id) if d.guard_id is not None else None
        subject = Subject(
            tenant_id=d.tenant_id,
            device_id=d.device_id,
            kind=d.kind,
            reporting_interval_s=float(d.reporting_interval_s),
            site_id=d.site_id,
            guard_id=d.guard_id,
            tracks_guard=guard is not None and guard.device_id == d.device_id,
            on_shift=on_shift.get(d.guard_id, True) if d.guard_id is not None else True,
        )
        subjects[subject.key] = subject
    for g in registry.guards.values():
        if g.device_id is None:
            subject = Subject(
                tenant_id=g.tenant_id,
                site_id=g.site_id,
                guard_id=g.guard_id,
                tracks_guard=True,
                on_shift=on_shift.get(g.guard_id, True),
            )
            subjects[subject.key] = subject
    return subjects


@dataclass(frozen=True, order=True)
class Sample:
    """One reading that windows care about. ``accuracy`` < 0 means unknown."""

    ts: datetime
    metric: str
    value: float = 0.0
    lat: float = 0.0
    lon: float = 0.0
    accuracy: float = -1.0

    def as_tuple(self) -> SampleTuple:
        """The fields in order: ``Sample(*s.as_tuple()) == s``; tuples sort like samples."""
        return (self.ts, self.metric, self.value, self.lat, self.lon, self.accuracy)


SampleTuple = tuple[datetime, str, float, float, float, float]
"""A :class:`Sample` as a plain tuple (how windows keep pending samples)."""


def sample_tuples(record: DataRecord) -> list[SampleTuple]:
    """The window samples a record carries (none for most records), as tuples
    (``Sample.as_tuple``): how the windows keep them, without building the samples."""
    match record:
        case Telemetry():
            out: list[SampleTuple] = []
            battery, temperature = record.battery, record.temperature
            if battery is not None and math.isfinite(battery):
                out.append((record.ts, BATTERY, float(battery), 0.0, 0.0, -1.0))
            if temperature is not None and math.isfinite(temperature):
                out.append((record.ts, TEMPERATURE, float(temperature), 0.0, 0.0, -1.0))
            return out
        case SensorReading(kind="temperature", value=value) if value is not None:
            return [(record.ts, TEMPERATURE, float(value), 0.0, 0.0, -1.0)]
        case Position():
            accuracy = -1.0 if record.accuracy is None else float(record.accuracy)
            return [(record.ts, POSITION, 0.0, record.lat, record.lon, accuracy)]
    return []


def samples_of(record: DataRecord) -> list[Sample]:
    """The window samples a record carries (none for most records)."""
    return [Sample(*values) for values in sample_tuples(record)]


@dataclass(frozen=True)
class AlertMemory:
    """The latest alert of one type for a subject, as the database has it."""

    open: bool
    first_seen: datetime
    closed_at: datetime | None = None


@dataclass(frozen=True)
class History:
    """What the database remembers of a subject (see ``WindowsConfig.resume``)."""

    last_heard: datetime | None = None
    """``received_at`` of its latest stored message."""
    last_event: datetime | None = None
    """Event time of its latest stored message."""
    samples: tuple[Sample, ...] = ()
    """Stored samples of the last ``WindowsConfig.lookback``, any order."""
    alerts: Mapping[str, AlertMemory] = field(default_factory=dict)
    """Latest alert per alert type (open, or recently closed)."""


@dataclass
class WindowEffects:
    """Alert changes. ``on_message`` belong to the message being processed (storage applies
    them only if that message is new); ``changes`` were decided by time, in decision order
    (event-time order for trends and man-down)."""

    on_message: list[AlertResolution] = field(default_factory=list)
    changes: list[AlertCandidate | AlertResolution] = field(default_factory=list)

    @property
    def alerts(self) -> list[AlertCandidate]:
        return [c for c in self.changes if isinstance(c, AlertCandidate)]

    @property
    def resolutions(self) -> list[AlertResolution]:
        return [c for c in self.changes if isinstance(c, AlertResolution)]

    def derived(self, tenant_id: int) -> DerivedAlerts | None:
        """The time-decided changes as one :class:`DerivedAlerts` (None when there are none)."""
        if not self.changes:
            return None
        return DerivedAlerts(tenant_id, self.alerts, self.resolutions)

    def __bool__(self) -> bool:
        return bool(self.on_message or self.changes)


@dataclass
class StreamState:
    """One metric's event-time clock (Bytewax ``EventClock`` semantics) and reorder buffer."""

    base: datetime | None = None
    """Watermark at ``seen_at``."""
    seen_at: datetime | None = None
    """Processing time at which ``base`` last advanced."""
    released_upto: datetime | None = None
    """Samples before this event time have been released; a new one before it is late."""
    pending: list[SampleTuple] = field(default_factory=list)
    """Accepted samples not yet released, sorted, as plain tuples (``Sample.as_tuple``):
    thousands of them live for the lateness, and CPython's cyclic GC stops tracking tuples of
    plain values, so they cost full collections nothing (as ``Sample`` objects they made the
    flow's gen-2 collections pause it for 100-200 ms every few seconds at 5,000 msg/s)."""

    def copy(self) -> StreamState:
        """An independent copy (samples are immutable: the list is copied, not them)."""
        return StreamState(self.base, self.seen_at, self.released_upto, list(self.pending))

    def watermark(self, now: datetime) -> datetime | None:
        if self.base is None or self.seen_at is None:
            return None
        return _watermark(self.base, self.seen_at, now)


def _watermark(base: datetime, seen_at: datetime, now: datetime) -> datetime:
    """Bytewax ``EventClock``: the watermark ``base`` set at ``seen_at`` advances with the
    processing clock (never backwards)."""
    return base + (now - seen_at if now > seen_at else _ZERO)


@dataclass
class DeviceWindowsState:
    """Everything one key remembers; ``DeviceWindows.snapshot()`` returns a copy."""

    subject: Subject
    streams: dict[str, StreamState] = field(default_factory=dict)
    """Per metric (battery, temperature, position)."""
    late: int = 0
    """Samples that arrived later than the lateness allows (left out of the windows)."""
    heartbeat: hb.HeartbeatState = field(default_factory=hb.HeartbeatState)
    trends: tr.TrendState = field(default_factory=tr.TrendState)
    immobility: imm.ImmobilityState = field(default_factory=imm.ImmobilityState)

    def copy(self) -> DeviceWindowsState:
        """An independent copy that shares only immutable values (subject, samples, times).

        Bytewax takes a snapshot of every key it touched at each epoch: this must stay cheap
        (a deep copy of the sample windows cost a quarter of the flow's CPU at 5,000 msg/s).
        """
        return DeviceWindowsState(
            self.subject,
            {metric: stream.copy() for metric, stream in self.streams.items()},
            self.late,
            copy.copy(self.heartbeat),
            self.trends.copy(),
            copy.copy(self.immobility),
        )


@dataclass(frozen=True)
class WindowsConfig:
    """Builds :class:`DeviceWindows`; validated eagerly (settings: ``NOC_WINDOW_*`` etc.)."""

    lateness_s: float = 30.0
    release_step_s: float = 0.0
    """``next_due`` rounds release times up to this grid (0: exact). Only when the caller
    wakes the windows changes, not what a call to ``on_time`` releases."""
    heartbeat: hb.HeartbeatConfig = field(default_factory=hb.HeartbeatConfig)
    trends: tr.TrendConfig = field(default_factory=tr.TrendConfig)
    immobility: imm.ImmobilityConfig = field(default_factory=imm.ImmobilityConfig)

    def __post_init__(self) -> None:
        value = self.lateness_s
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigError(f"lateness_s must be a number >= 0, got {value!r}")
        step = self.release_step_s
        if isinstance(step, bool) or not isinstance(step, int | float) or not 0 <= step < 3600:
            raise ConfigError(f"release_step_s must be a number in [0, 3600), got {step!r}")

    @property
    def lateness(self) -> timedelta:
        return timedelta(seconds=self.lateness_s)

    @property
    def lookback(self) -> timedelta:
        """How much stored history a rebuild replays: two of the longest window, plus the
        lateness (enough to know whether a condition holds, and since when)."""
        t = self.trends
        longest = max(
            t.battery_window_s, t.temperature_sustained_s, self.immobility.still_minutes * 60
        )
        return timedelta(seconds=2 * longest + self.lateness_s)

    def build(self, subject: Subject, state: DeviceWindowsState | None = None) -> DeviceWindows:
        return DeviceWindows(self, state or DeviceWindowsState(subject))

    def resume(
        self, subject: Subject, history: History, now: datetime, started_at: datetime
    ) -> tuple[DeviceWindows, WindowEffects]:
        """Rebuild a subject's windows from the database's memory; also returns the alert
        changes that reconcile the alert table with what the stored data says."""
        windows = self.build(subject)
        fx = WindowEffects()
        windows._resume_heartbeat(history, started_at, fx)
        windows._resume_windows(history, now, fx)
        return windows, fx


@dataclass
class _Change:
    alert_type: str
    since: datetime
    alert: AlertCandidate | None = None
    resolution: AlertResolution | None = None


class DeviceWindows:
    """The windows of one subject. Not thread-safe (one per key, like Bytewax state)."""

    def __init__(self, config: WindowsConfig, state: DeviceWindowsState) -> None:
        self.config = config
        self.state = state
        self._heartbeat = config.heartbeat.build(state.heartbeat)
        self._trends = config.trends.build(state.trends)
        self._immobility = config.immobility.build(state.immobility)
        self._lateness = config.lateness
        # Each key's grid is shifted by a fraction of the step taken from its key, so the
        # wake-ups of many devices spread over the step instead of landing at once.
        self._phase = zlib.crc32(state.subject.key.encode()) % 1000 / 1000
        self._step_us = round(config.release_step_s * 1_000_000)
        self._shift_us = round(self._phase * self._step_us)

    @property
    def subject(self) -> Subject:
        return self.state.subject

    @property
    def offline(self) -> bool:
        return self._heartbeat.offline

    def watermark(self, metric: str, now: datetime) -> datetime | None:
        """Event time before which a metric's samples are final, at processing time ``now``."""
        stream = self.state.streams.get(metric)
        return None if stream is None else stream.watermark(now)

    # -- input ------------------------------------------------------------------------------

    def on_record(self, record: DataRecord, now: datetime) -> WindowEffects:
        """A record of the subject, processed at ``now``."""
        fx = WindowEffects()
        subject = self.subject
        if subject.device_id is not None:
            event = self._heartbeat.heard(record.ts, record.received_at)
            if event is not None:
                fx.on_message.append(self._online(event, "device back online"))
        st = self.state
        samples = sample_tuples(record)
        if not samples:
            return fx
        # The event-time clock: a record moves it to min(event, receipt) - lateness.
        candidate = min(record.ts, record.received_at) - self._lateness
        streams = st.streams
        for key in samples:
            metric = key[1]
            if metric == POSITION and not subject.tracks_guard:
                continue
            stream = streams.get(metric)
            watermark = None
            if stream is None:
                stream = streams[metric] = StreamState()
            else:
                # Whatever the watermark has passed is final (released below).
                base, seen_at = stream.base, stream.seen_at
                if base is not None and seen_at is not None:
                    watermark = _watermark(base, seen_at, now)
                    upto = stream.released_upto
                    if upto is None or watermark > upto:
                        stream.released_upto = watermark
                upto = stream.released_upto
                if upto is not None and key[0] < upto:
                    st.late += 1
                    continue
            pending = stream.pending
            if not pending or key > pending[-1]:  # in order, as most readings arrive
                pending.append(key)
            else:
                i = bisect.bisect_left(pending, key)
                if pending[i] != key:
                    pending.insert(i, key)
            if watermark is None or candidate > watermark:
                stream.base, stream.seen_at = candidate, now
        self._release(now, fx)
        return fx

    def on_time(self, now: datetime) -> WindowEffects:
        """Time has passed: release what the watermark passed, and check the heartbeat."""
        fx = WindowEffects()
        self._release(now, fx)
        event = self._heartbeat.check(now, self.subject.reporting_interval_s)
        if event is not None:
            fx.changes.append(self._offline(event))
        return fx

    def next_due(self) -> datetime | None:
        """The processing time at which ``on_time`` has something to do (None: nothing)."""
        due = self._heartbeat.due(self.subject.reporting_interval_s)
        step_us = self._step_us
        for c in self.state.streams.values():
            pending, base, seen_at = c.pending, c.base, c.seen_at
            if pending and base is not None and seen_at is not None:
                # The watermark must pass the sample: release strictly after it reaches it.
                lag = pending[0][0] - base
                release = seen_at + (lag if lag > _ZERO else _ZERO) + _TICK
                if step_us:
                    us = (release - _EPOCH) // _TICK - self._shift_us
                    release = _EPOCH + _TICK * (-(-us // step_us) * step_us + self._shift_us)
                if due is None or release < due:
                    due = release
        return due

    def rebind(self, subject: Subject, now: datetime) -> WindowEffects:
        """The registry changed what this key watches (interval, kind, guard, shift)."""
        fx = WindowEffects()
        old = self.subject
        if self._immobility.raised and (
            not subject.on_shift or not subject.tracks_guard or subject.guard_id != old.guard_id
        ):
            event = self._immobility.off_shift(now)
            if event is not None:
                fx.changes.append(self._man_down_resolution(event, "guard off shift"))
        elif not subject.on_shift or not subject.tracks_guard:
            self._immobility.off_shift(now)
        self.state.subject = subject
        return fx

    def retire(
        self, now: datetime, note: str = "device removed from the registry"
    ) -> WindowEffects:
        """The subject left the registry: resolve whatever this key has raised."""
        fx = WindowEffects()
        s = self.subject
        if self._heartbeat.offline:
            fx.changes.append(self._resolution(hb.ALERT_TYPE, self._device_source(), now, note))
        t = self.state.trends
        if t.battery.raised_at is not None:
            fx.changes.append(self._resolution(tr.BATTERY_DRAIN, self._device_source(), now, note))
        if t.temperature.raised_at is not None:
            fx.changes.append(
                self._resolution(tr.TEMPERATURE_SUSTAINED, self._device_source(), now, note)
            )
        if self._immobility.raised and s.guard_id is not None:
            fx.changes.append(self._resolution(imm.ALERT_TYPE, guard_source(s.guard_id), now, note))
        return fx

    def snapshot(self) -> DeviceWindowsState:
        """A copy of the state; later changes to these windows do not show in it."""
        return self.state.copy()

    # -- event time -------------------------------------------------------------------------

    def _release(self, now: datetime, fx: WindowEffects) -> None:
        for stream in self.state.streams.values():
            pending, base, seen_at = stream.pending, stream.base, stream.seen_at
            if not pending or base is None or seen_at is None:
                continue
            watermark = _watermark(base, seen_at, now)
            upto = stream.released_upto
            if upto is None or watermark > upto:
                stream.released_upto = upto = watermark
            if pending[0][0] >= upto:
                continue
            n = bisect.bisect_left(pending, (upto,))  # the first sample at or after upto
            released = pending[:n]
            del pending[:n]
            for values in released:
                change = self._apply(*values)
                if change is not None:
                    if change.alert is not None:
                        fx.changes.append(change.alert)
                    if change.resolution is not None:
                        fx.changes.append(change.resolution)

    def _apply(
        self,
        ts: datetime,
        metric: str,
        value: float = 0.0,
        lat: float = 0.0,
        lon: float = 0.0,
        accuracy: float = -1.0,
    ) -> _Change | None:
        """Feed one released sample (the fields of a :class:`Sample`) to its detector."""
        if metric == BATTERY:
            event = self._trends.battery(ts, value)
            return None if event is None else self._trend_change(event)
        if metric == TEMPERATURE:
            event = self._trends.temperature(ts, value)
            return None if event is None else self._trend_change(event)
        if metric == POSITION:
            s = self.subject
            if s.guard_id is None:
                return None
            acc = None if accuracy < 0 else accuracy
            fix = self._immobility.on_fix(ts, lat, lon, acc, s.on_shift)
            return None if fix is None else self._man_down_change(fix)
        return None

    # -- restart ----------------------------------------------------------------------------

    def _resume_heartbeat(self, history: History, started_at: datetime, fx: WindowEffects) -> None:
        if self.subject.device_id is None:
            return
        h = self.state.heartbeat
        h.last_event = history.last_event
        heard = history.last_heard
        memory = history.alerts.get(hb.ALERT_TYPE)
        if memory is not None and memory.open:
            if heard is not None and heard > memory.first_seen:
                note = "device heard from after it was reported offline"
                fx.changes.append(
                    self._resolution(hb.ALERT_TYPE, self._device_source(), heard, note)
                )
                h.heard_at = max(heard, started_at)
            else:
                h.heard_at, h.offline_since = heard, memory.first_seen
        elif memory is not None and heard is not None and memory.first_seen > heard:
            # This silence was reported and someone closed the alert: do not report it again.
            h.heard_at, h.offline_since = heard, memory.first_seen
        elif heard is not None:
            h.heard_at = max(heard, started_at)

    def _resume_windows(self, history: History, now: datetime, fx: WindowEffects) -> None:
        st = self.state
        memory = history.alerts
        presets: tuple[tuple[str, Any], ...] = (
            (tr.BATTERY_DRAIN, st.trends.battery),
            (tr.TEMPERATURE_SUSTAINED, st.trends.temperature),
            (imm.ALERT_TYPE, st.immobility),
        )
        for alert_type, detector_state in presets:
            m = memory.get(alert_type)
            if m is not None and m.open:
                detector_state.raised_at = m.first_seen
        changes: dict[str, list[_Change]] = {}
        replayed = sorted(set(history.samples))
        for sample in replayed:
            change = self._apply(*sample.as_tuple())
            if change is not None:
                changes.setdefault(change.alert_type, []).append(change)
        for alert_type, replay in changes.items():
            fx.changes.extend(_reconcile(replay, memory.get(alert_type)))
        latest: dict[str, datetime] = {}
        for sample in replayed:
            latest[sample.metric] = sample.ts  # sorted: the last one is the latest
        for metric, last_ts in latest.items():
            # Stored readings are final: redelivered ones are late, newer ones count.
            st.streams[metric] = StreamState(
                base=min(last_ts, now) - self.config.lateness,
                seen_at=now,
                released_upto=last_ts + _TICK,
            )

    # -- alerts -----------------------------------------------------------------------------

    def _device_source(self) -> str:
        s = self.subject
        assert s.device_id is not None
        return s.device_id

    def _candidate(
        self, alert_type: str, source: str, severity: str, message: str, ts: datetime,
        lat: float | None = None, lon: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> AlertCandidate:  # fmt: skip
        return alert_for(self.subject, source, alert_type, severity, message, ts, lat, lon, details)

    def _resolution(self, alert_type: str, source: str, ts: datetime, note: str) -> AlertResolution:
        return AlertResolution(self.subject.tenant_id, source, alert_type, ts, note)

    def _offline(self, event: hb.HeartbeatEvent) -> AlertCandidate:
        s = self.subject
        interval = s.reporting_interval_s or 0.0
        n = self.config.heartbeat.intervals
        kind = s.kind or "device"
        return self._candidate(
            hb.ALERT_TYPE,
            self._device_source(),
            self.config.heartbeat.severity(s.kind),
            f"{kind.replace('_', ' ').capitalize()} {s.device_id} offline: nothing received "
            f"for {event.silent_s:.0f} s ({n} × its {interval:g} s reporting interval)",
            event.at,
            details={
                "last_heard": _iso(event.heard_at),
                "last_event": _iso(event.last_event),
                "reporting_interval_s": interval,
                "intervals": n,
            },
        )

    def _online(self, event: hb.HeartbeatEvent, note: str) -> AlertResolution:
        return self._resolution(
            hb.ALERT_TYPE, self._device_source(), event.at, f"{note} after {event.silent_s:.0f} s"
        )

    def _trend_change(self, event: tr.TrendEvent) -> _Change:
        source = self._device_source()
        device = self.subject.device_id
        details = {**event.details, "since": _iso(event.since)}
        if event.alert_type == tr.BATTERY_DRAIN:
            if event.raised:
                c = self.config.trends
                message = (
                    f"Battery of {device} draining {event.value:.0f} %/h "
                    f"(threshold {c.battery_drain_per_hour:g} %/h)"
                )
                alert = self._candidate(
                    tr.BATTERY_DRAIN, source, c.battery_severity, message, event.at,
                    details=details,
                )  # fmt: skip
                return _Change(tr.BATTERY_DRAIN, event.since, alert=alert)
            note = f"battery drain down to {event.value:.1f} %/h"
            return _Change(
                tr.BATTERY_DRAIN,
                event.since,
                resolution=self._resolution(tr.BATTERY_DRAIN, source, event.at, note),
            )
        if event.raised:
            c = self.config.trends
            minutes = (event.at - event.since).total_seconds() / 60
            message = (
                f"Temperature at {device} above {c.temperature_high:g} °C for {minutes:.0f} min "
                f"(peak {event.details.get('peak', event.value):g} °C)"
            )
            alert = self._candidate(
                tr.TEMPERATURE_SUSTAINED, source, c.temperature_severity, message, event.at,
                details=details,
            )  # fmt: skip
            return _Change(tr.TEMPERATURE_SUSTAINED, event.since, alert=alert)
        note = f"temperature back to {event.value:g} °C"
        return _Change(
            tr.TEMPERATURE_SUSTAINED,
            event.since,
            resolution=self._resolution(tr.TEMPERATURE_SUSTAINED, source, event.at, note),
        )

    def _man_down_change(self, event: imm.ImmobilityEvent) -> _Change:
        s = self.subject
        assert s.guard_id is not None
        if event.kind is imm.ImmobilityEventKind.MAN_DOWN:
            c = self.config.immobility
            minutes = (event.at - event.since).total_seconds() / 60
            alert = self._candidate(
                imm.ALERT_TYPE,
                guard_source(s.guard_id),
                c.severity,
                f"Guard {s.guard_id} has not moved more than {c.radius_m:g} m "
                f"for {minutes:.0f} min",
                event.at,
                lat=event.lat,
                lon=event.lon,
                details={"since": _iso(event.since), "radius_m": c.radius_m,
                         "still_minutes": c.still_minutes},
            )  # fmt: skip
            return _Change(imm.ALERT_TYPE, event.since, alert=alert)
        note = (
            f"guard moved {event.moved_m:.0f} m"
            if event.kind is imm.ImmobilityEventKind.MOVED
            else "guard off shift"
        )
        return _Change(
            imm.ALERT_TYPE, event.since, resolution=self._man_down_resolution(event, note)
        )

    def _man_down_resolution(self, event: imm.ImmobilityEvent, note: str) -> AlertResolution:
        assert self.subject.guard_id is not None
        return self._resolution(imm.ALERT_TYPE, guard_source(self.subject.guard_id), event.at, note)


_TICK = timedelta(microseconds=1)
_ZERO = timedelta(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _reconcile(
    replay: list[_Change], memory: AlertMemory | None
) -> list[AlertCandidate | AlertResolution]:
    """The alert changes that bring one alert type's table rows in line with a replay.

    ``replay`` alternates raise / resolve (the detector started raised when ``memory`` is an
    open alert, so it may begin with that alert's resolution). An episode is *recorded* when
    its raise is not newer than the latest alert (``first_seen``: alert times are event times,
    so a replay reproduces them), or when that alert was closed after the episode began
    (someone closed it; it is not raised again). Recorded episodes only contribute the end of
    the open alert; every later episode is raised (and resolved, if it ended) again.
    """
    out: list[AlertCandidate | AlertResolution] = []
    is_open = memory is not None and memory.open
    end_of_open: AlertResolution | None = None
    i = 0
    if replay and replay[0].resolution is not None:
        end_of_open = replay[0].resolution if is_open else None
        i = 1
    while i < len(replay):
        raised, ended = replay[i], replay[i + 1] if i + 1 < len(replay) else None
        i += 2
        alert = raised.alert
        assert alert is not None
        recorded = memory is not None and (
            alert.ts <= memory.first_seen
            or (memory.closed_at is not None and memory.closed_at > raised.since)
        )
        if recorded:
            end_of_open = ended.resolution if ended is not None and is_open else None
            continue
        if end_of_open is not None:  # the open alert ended before this episode began
            out.append(end_of_open)
            end_of_open = None
        out.append(alert)
        if ended is not None and ended.resolution is not None:
            out.append(ended.resolution)
    if end_of_open is not None:
        out.append(end_of_open)
    return out


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()
