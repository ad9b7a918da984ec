"""Windows step of the ingest flow: device heartbeat, telemetry trends, man-down.

Wiring for :mod:`operators.windows`. Each *subject* (a registered device, or a guard without
one) has one :class:`~operators.windows.DeviceWindows`; the step (:func:`windows_step`) is an
``op.stateful_batch`` keyed by shard, whose logic, :class:`ShardLogic`, holds the windows of
the shard's subjects and their timers:

- a message updates the heartbeat and the event-time windows; if it brings an offline device
  back, the resolution rides on the message's own :class:`Enriched` (storage applies it only
  if the message is new, so a redelivery does not resolve twice), or travels on its own when
  the message is stored by the priority lane (``Envelope.elsewhere``);
- alerts decided by time (silence, a trend, a guard not moving) leave as
  ``derived(DerivedAlerts(...))`` envelopes, from ``on_notify`` (Bytewax calls it when the
  ``notify_at`` time passes on the wall clock) or from ``on_batch``;
- a **roster** input (:class:`RosterSource`) emits one :class:`RosterTick` per registered
  device (and per guard without a device) when the flow starts and whenever the registry
  changes. Without it a subject's state would only exist once a message arrived, and a device
  that stays silent after a restart would never be reported. Ticks also carry interval, kind
  and shift changes, and removals (whose raised alerts are resolved).

Restart: when a subject's state is first built it is rebuilt from the database
(:class:`HistoryLoader` → ``WindowsConfig.resume``), like the geofence hysteresis is: open
alerts, the latest stored message and the samples of the last windows. Bytewax recovery
snapshots work too when ``NOC_WINDOW_SNAPSHOTS`` is on (``snapshot()`` returns the state; the
builder resumes from it) but the database is the source of truth: the MQTT source cannot seek,
so the flow runs without them, and by default ``snapshot()`` returns None.

Known limit (storage): the batch writer applies all raises of a batch before all of its
resolutions. If one sink batch holds the end of an episode and the start of the next for the
same (source, type), which takes a backlog replaying both at once, the new raise folds into
the old alert and is resolved with it. The pure core keeps the decision order
(``WindowEffects.changes``); ``DerivedAlerts`` and the writer would have to keep it too.
"""

from __future__ import annotations

import heapq
import logging
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import bytewax.operators as op
import psycopg
from bytewax.dataflow import Stream
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators import StatefulBatchLogic
from prometheus_client import Counter

from flows.envelope import Envelope, derived
from noc.settings import Settings, WindowSettings
from operators.fence_alerts import guard_source
from operators.heartbeat import ALERT_TYPE as OFFLINE
from operators.heartbeat import HeartbeatConfig
from operators.immobility import ALERT_TYPE as MAN_DOWN
from operators.immobility import ImmobilityConfig
from operators.records import DerivedAlerts, Enriched, Position
from operators.trends import BATTERY_DRAIN, TEMPERATURE_SUSTAINED, TrendConfig
from operators.windows import (
    BATTERY,
    POSITION,
    TEMPERATURE,
    AlertMemory,
    DeviceWindows,
    DeviceWindowsState,
    History,
    Sample,
    Subject,
    WindowEffects,
    WindowsConfig,
    subject_key,
    subjects_of,
)
from storage.db import connect
from storage.errors import DatabaseUnavailable
from storage.registry import RegistryCache

log = logging.getLogger(__name__)

PASS_KEY = "-"
"""Key of items no window watches (dead letters, system health): passed through, no state."""

LATE_SAMPLES = Counter(
    "noc_window_late_samples_total",
    "Readings that arrived later than NOC_WINDOW_LATENESS_S allows (stored, not windowed)",
)
REBUILDS = Counter(
    "noc_window_rebuilds_total",
    "Window states built, by source: database (rebuilt), fresh (nothing stored), unavailable",
    ["source"],
)
WINDOW_ALERTS = Counter(
    "noc_window_alert_changes_total",
    "Alerts raised and resolved by the windows step",
    ["alert_type", "change"],
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RosterTick:
    """A subject as the registry now describes it; ``removed``: it left the registry."""

    subject: Subject
    removed: bool = False


WindowItem = Envelope | RosterTick


def window_key(value: WindowItem) -> str:
    """Key of the windows step: the device, the guard without a device, or ``PASS_KEY``."""
    if isinstance(value, RosterTick):
        return value.subject.key
    item = value.item
    if isinstance(item, Enriched):
        if item.device_id is not None:
            return subject_key(item.tenant_id, item.device_id, None)
        if item.guard_id is not None and isinstance(item.record, Position):
            return subject_key(item.tenant_id, None, item.guard_id)
    return PASS_KEY


def windows_config(settings: WindowSettings) -> WindowsConfig:
    """The operators' config from the ``NOC_*`` settings (validated eagerly)."""
    return WindowsConfig(
        lateness_s=settings.lateness_s,
        release_step_s=settings.release_step_s,
        heartbeat=HeartbeatConfig(intervals=settings.offline_intervals),
        trends=TrendConfig(
            battery_drain_per_hour=settings.battery_drain_per_hour,
            battery_window_s=settings.battery_window_s,
            temperature_high=settings.temperature_high,
            temperature_sustained_s=settings.temperature_sustained_s,
        ),
        immobility=ImmobilityConfig(
            radius_m=settings.man_down_radius_m, still_minutes=settings.man_down_minutes
        ),
    )


class SubjectDirectory(Protocol):
    def subjects(self) -> Mapping[str, Subject]: ...


class HistorySource(Protocol):
    def load(self, subject: Subject, now: datetime) -> History | None: ...


class Roster:
    """Subjects from the cached registry plus the guards' shifts (``guards.on_shift``, read
    here because the registry snapshot does not carry it), reloaded when the registry
    version changes (a shift change bumps it)."""

    def __init__(self, registry: RegistryCache, database_url: str) -> None:
        self._registry = registry
        self._url = database_url
        self._version = -1
        self._subjects: dict[str, Subject] = {}
        self._conn: psycopg.Connection | None = None

    def subjects(self) -> Mapping[str, Subject]:
        snapshot = self._registry.get()
        if snapshot.version != self._version:
            shifts = self._shifts()
            if shifts is not None or self._version == -1:
                self._subjects = subjects_of(snapshot, shifts or {})
                if shifts is not None:
                    self._version = snapshot.version
        return self._subjects

    def _shifts(self) -> dict[int, bool] | None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self._url, autocommit=True, application_name="noc-roster")
            rows = self._conn.execute("SELECT guard_id, on_shift FROM guards").fetchall()
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("cannot read guard shifts, keeping the last ones: %s", exc)
            self.close()
            return None
        return {int(g): bool(on) for g, on in rows}

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class RosterSource(FixedPartitionedSource[RosterTick, None]):
    """One partition that polls the roster every ``refresh_s`` (at least 0.1 s) and emits the
    subjects that are new or changed, and the removed ones. Never ends."""

    def __init__(self, roster: SubjectDirectory, refresh_s: float) -> None:
        self._roster = roster
        self._refresh = timedelta(seconds=max(refresh_s, 0.1))

    def list_parts(self) -> list[str]:
        return ["roster"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _RosterPartition:
        del step_id, for_part, resume_state
        return _RosterPartition(self._roster, self._refresh)


class _RosterPartition(StatefulSourcePartition[RosterTick, None]):
    def __init__(self, roster: SubjectDirectory, refresh: timedelta) -> None:
        self._roster = roster
        self._refresh = refresh
        self._known: dict[str, Subject] = {}
        self._seen: Mapping[str, Subject] | None = None
        self._next = _utcnow()

    def next_batch(self) -> list[RosterTick]:
        now = _utcnow()
        if now < self._next:
            return []
        self._next = now + self._refresh
        subjects = self._roster.subjects()
        if subjects is self._seen:  # unchanged (the roster caches per registry version)
            return []
        self._seen = subjects
        current = dict(subjects)
        ticks = [RosterTick(s) for key, s in current.items() if self._known.get(key) != s]
        ticks += [RosterTick(self._known[key], True) for key in self._known.keys() - current]
        if ticks:
            log.info("roster: %d subject(s) new, changed or removed", len(ticks))
        self._known = current
        return ticks

    def next_awake(self) -> datetime:
        return self._next

    def snapshot(self) -> None:
        return None


ShardState = dict[str, DeviceWindowsState]
"""What a shard hands to Bytewax snapshots: each subject's windows."""


def shard_of(key: str, shards: int) -> str:
    """The shard (``"0"`` .. ``shards-1``) of a window key; stable across processes."""
    return str(zlib.crc32(key.encode()) % shards) if shards > 1 else "0"


class WindowStep:
    """Builder of the ``op.stateful_batch`` windows step (``build`` is the builder).

    The step is keyed by *shard*, not by subject: one logic holds the windows of every subject
    of its shard and keeps their timers in a heap. Bytewax then calls Python once per batch
    and once per wake-up instead of once per subject for each (per subject, the calls and
    Bytewax's own bookkeeping of 500 keys cost more than the windows themselves).
    ``shards`` (``NOC_WINDOW_SHARDS``) spreads subjects over several keys, which Bytewax
    routes to its workers by hash.
    """

    def __init__(
        self,
        config: WindowsConfig,
        directory: SubjectDirectory,
        history: HistorySource | None,
        now: Callable[[], datetime] = _utcnow,
        snapshots: bool = False,
        shards: int = 1,
    ) -> None:
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self.config = config
        self._directory = directory
        self._history = history
        self.now = now
        self.snapshots = snapshots
        """Hand the windows to Bytewax at every epoch (only of use with Bytewax recovery:
        without it a snapshot is a copy of every device's windows made for nothing every
        10 s, a pause that grows with the windows)."""
        self.shards = shards
        self.started_at = now()

    def shard_key(self, value: WindowItem) -> str:
        """Key of the step: the shard of the item's subject."""
        return shard_of(window_key(value), self.shards)

    def build(self, resume: ShardState | None) -> ShardLogic:
        windows = {
            key: self.config.build(state.subject, state) for key, state in (resume or {}).items()
        }
        return ShardLogic(self, windows)

    def bind(self, subject: Subject, now: datetime) -> tuple[DeviceWindows, WindowEffects]:
        """A key's first state: rebuilt from the database, or fresh when it has nothing."""
        history = None if self._history is None else self._history.load(subject, now)
        if history is None:
            REBUILDS.labels("fresh" if self._history is None else "unavailable").inc()
            return self.config.build(subject), WindowEffects()
        REBUILDS.labels("database").inc()
        return self.config.resume(subject, history, now, self.started_at)

    def subject_for(self, env: Envelope) -> Subject | None:
        """The registry's subject of a message, or one made from the message itself."""
        subject = self._directory.subjects().get(window_key(env))
        if subject is not None:
            return subject
        item = env.item
        if not isinstance(item, Enriched):
            return None
        position = isinstance(item.record, Position)
        return Subject(
            tenant_id=item.tenant_id,
            device_id=item.device_id,
            site_id=item.site_id,
            guard_id=item.guard_id,
            tracks_guard=position and item.guard_id is not None,
        )


def windows_step(step_id: str, up: Stream[WindowItem], step: WindowStep) -> Stream[Envelope]:
    """Wire the windows: key by shard, one :class:`ShardLogic` per shard, unkey."""
    by_shard = op.key_on(f"{step_id}_by_shard", up, step.shard_key)
    # ("0", Envelope | RosterTick)
    windowed = op.stateful_batch(step_id, by_shard, step.build)
    # ("0", Envelope + back-online resolution | derived(DerivedAlerts) from timers)
    return op.key_rm(f"{step_id}_unkey", windowed)


class ShardLogic(StatefulBatchLogic[WindowItem, Envelope, ShardState | None]):
    """The windows of one shard's subjects, with their timers in a heap.

    Items no window watches pass through. A subject's windows are built at its first message
    or roster tick (rebuilt from the database) and dropped when it leaves the registry.
    ``notify_at`` is the earliest subject timer; heap entries that a later change replaced
    are skipped when they come up.
    """

    def __init__(self, step: WindowStep, windows: dict[str, DeviceWindows]) -> None:
        self._step = step
        self._windows = windows
        self._due: dict[str, datetime] = {}
        self._heap: list[tuple[datetime, str]] = []
        for key in windows:
            self._schedule(key)

    def on_batch(self, values: list[WindowItem]) -> tuple[Iterable[Envelope], bool]:
        now = self._step.now()
        out: list[Envelope] = []
        touched: set[str] = set()
        for value in values:
            if isinstance(value, RosterTick):
                key = value.subject.key
                self._on_tick(key, value, now, out)
                touched.add(key)
                continue
            item = value.item
            key = window_key(value)
            if key == PASS_KEY or not isinstance(item, Enriched):
                out.append(value)
                continue
            windows = self._windows.get(key)
            if windows is None:
                subject = self._step.subject_for(value)
                if subject is None:
                    out.append(value)
                    continue
                windows, rebuilt = self._step.bind(subject, now)
                self._windows[key] = windows
                self._derived(windows, rebuilt, out)
            late = windows.state.late
            fx = windows.on_record(item.record, now)
            if windows.state.late > late:
                LATE_SAMPLES.inc(windows.state.late - late)
            if fx.on_message:
                for r in fx.on_message:
                    WINDOW_ALERTS.labels(r.alert_type, "resolved").inc()
                if value.elsewhere:  # not stored here: the resolution travels on its own
                    out.append(derived(DerivedAlerts(item.tenant_id, resolutions=fx.on_message)))
                else:
                    item.resolutions.extend(fx.on_message)
            out.append(value)
            self._derived(windows, fx, out)
            touched.add(key)
        for key in touched:
            self._schedule(key)
        return out, StatefulBatchLogic.RETAIN

    def _on_tick(self, key: str, tick: RosterTick, now: datetime, out: list[Envelope]) -> None:
        windows = self._windows.get(key)
        if windows is None:
            if not tick.removed:
                windows, rebuilt = self._step.bind(tick.subject, now)
                self._windows[key] = windows
                self._derived(windows, rebuilt, out)
        elif tick.removed:
            self._derived(windows, windows.retire(now), out)
            del self._windows[key]
        else:
            self._derived(windows, windows.rebind(tick.subject, now), out)

    def on_notify(self) -> tuple[Iterable[Envelope], bool]:
        now = self._step.now()
        out: list[Envelope] = []
        heap = self._heap
        due_keys: list[str] = []
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            if self._due.get(key) == due:
                del self._due[key]
                due_keys.append(key)
        for key in due_keys:
            windows = self._windows.get(key)
            if windows is not None:
                self._derived(windows, windows.on_time(now), out)
                self._schedule(key)
        return out, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        heap = self._heap
        while heap and self._due.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # replaced by a later schedule
        return heap[0][0] if heap else None

    def snapshot(self) -> ShardState | None:
        if not self._step.snapshots:
            return None  # resumed from the database instead (see the module docstring)
        return {key: windows.snapshot() for key, windows in self._windows.items()}

    def _schedule(self, key: str) -> None:
        windows = self._windows.get(key)
        due = None if windows is None else windows.next_due()
        if due is None:
            self._due.pop(key, None)
        elif self._due.get(key) != due:
            self._due[key] = due
            heapq.heappush(self._heap, (due, key))
        if len(self._heap) > 4 * len(self._due) + 64:  # mostly replaced entries: rebuild
            self._heap = [(d, k) for k, d in self._due.items()]
            heapq.heapify(self._heap)

    @staticmethod
    def _derived(windows: DeviceWindows, fx: WindowEffects, out: list[Envelope]) -> None:
        alerts = fx.derived(windows.subject.tenant_id)
        if alerts is None:
            return
        for a in alerts.alerts:
            WINDOW_ALERTS.labels(a.alert_type, "raised").inc()
        for r in alerts.resolutions:
            WINDOW_ALERTS.labels(r.alert_type, "resolved").inc()
        out.append(derived(alerts))


# -- rebuilding from the database ---------------------------------------------------------------

_ALERTS = """
SELECT DISTINCT ON (source_id, alert_type)
       alert_type, status IN ('new', 'acknowledged'), first_seen, closed_at
FROM alerts
WHERE tenant_id = %(tenant)s
  AND (source_id, alert_type) IN (SELECT * FROM unnest(%(sources)s::text[], %(types)s::text[]))
  AND (status IN ('new', 'acknowledged') OR last_seen > %(recent)s)
ORDER BY source_id, alert_type, alert_id DESC
"""

# The latest stored message of the subject, per table (index scans on the idempotency keys).
_LAST = """
SELECT max(ts), max(received_at) FROM (
    (SELECT ts, received_at FROM telemetry WHERE device_id = %(device)s AND ts > %(since)s
     ORDER BY ts DESC LIMIT 1)
    UNION ALL
    (SELECT ts, received_at FROM sensor_readings WHERE sensor_id = %(device)s AND ts > %(since)s
     ORDER BY ts DESC LIMIT 1)
    UNION ALL
    (SELECT ts, received_at FROM device_alerts WHERE source_id = %(device)s AND ts > %(since)s
     ORDER BY ts DESC LIMIT 1)
    UNION ALL
    (SELECT ts, received_at FROM positions WHERE guard_id = %(guard)s AND ts > %(since)s
     ORDER BY ts DESC LIMIT 1)
) latest
"""

_TELEMETRY = """
SELECT ts, battery, temperature FROM telemetry
WHERE device_id = %s AND ts >= %s AND (battery IS NOT NULL OR temperature IS NOT NULL)
"""
_SENSOR_TEMPERATURE = """
SELECT ts, value FROM sensor_readings
WHERE sensor_id = %s AND kind = 'temperature' AND value IS NOT NULL AND ts >= %s
"""
_POSITIONS = "SELECT ts, lat, lon, accuracy FROM positions WHERE guard_id = %s AND ts >= %s"


class HistoryLoader:
    """Reads a subject's :class:`History` through one connection it owns (reconnects).

    ``heard_lookback``: how far back the latest stored message is looked for (a device silent
    for longer counts as never heard, unless its offline alert is still open);
    ``alert_lookback``: closed alerts older than this are not remembered (open ones always).
    """

    def __init__(
        self,
        database_url: str,
        lookback: timedelta,
        heard_lookback: timedelta = timedelta(days=30),
        alert_lookback: timedelta = timedelta(days=7),
    ) -> None:
        self._url = database_url
        self._lookback = lookback
        self._heard_lookback = heard_lookback
        self._alert_lookback = alert_lookback
        self._conn: psycopg.Connection | None = None

    def load(self, subject: Subject, now: datetime) -> History | None:
        """The subject's history, or None when the database cannot be read (start fresh)."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self._url, autocommit=True, application_name="noc-windows")
            return self._load(self._conn, subject, now)
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("cannot rebuild the windows of %s: %s", subject.key, exc)
            self.close()
            return None

    def _load(self, conn: psycopg.Connection, subject: Subject, now: datetime) -> History:
        pairs: list[tuple[str, str]] = []
        if subject.device_id is not None:
            d = subject.device_id
            pairs += [(d, OFFLINE), (d, BATTERY_DRAIN), (d, TEMPERATURE_SUSTAINED)]
        guard = subject.guard_id if subject.tracks_guard else None
        if guard is not None:
            pairs.append((guard_source(guard), MAN_DOWN))
        alerts: dict[str, AlertMemory] = {}
        rows: list[Any] = conn.execute(
            _ALERTS,
            {
                "tenant": subject.tenant_id,
                "sources": [p[0] for p in pairs],
                "types": [p[1] for p in pairs],
                "recent": now - self._alert_lookback,
            },
        ).fetchall()
        for alert_type, is_open, first_seen, closed_at in rows:
            closed = _utc_or_none(closed_at)
            alerts[alert_type] = AlertMemory(bool(is_open), _utc(first_seen), closed)
        since_heard = now - self._heard_lookback
        last = conn.execute(
            _LAST, {"device": subject.device_id, "guard": guard, "since": since_heard}
        ).fetchone()
        last_event = _utc_or_none(last[0]) if last else None
        last_heard = _utc_or_none(last[1]) if last else None
        samples: list[Sample] = []
        if last_event is not None:
            since = last_event - self._lookback
            if subject.device_id is not None:
                for ts, battery, temperature in conn.execute(
                    _TELEMETRY, (subject.device_id, since)
                ):
                    if battery is not None:
                        samples.append(Sample(_utc(ts), BATTERY, float(battery)))
                    if temperature is not None:
                        samples.append(Sample(_utc(ts), TEMPERATURE, float(temperature)))
                for ts, value in conn.execute(_SENSOR_TEMPERATURE, (subject.device_id, since)):
                    samples.append(Sample(_utc(ts), TEMPERATURE, float(value)))
            if guard is not None:
                for ts, lat, lon, accuracy in conn.execute(_POSITIONS, (guard, since)):
                    acc = -1.0 if accuracy is None else float(accuracy)
                    samples.append(Sample(_utc(ts), POSITION, 0.0, float(lat), float(lon), acc))
        return History(last_heard, last_event, tuple(samples), alerts)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def _utc_or_none(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.astimezone(UTC)


def window_parts(settings: Settings, registry: RegistryCache) -> tuple[RosterSource, WindowStep]:
    """The roster input and the windows step of the ingest flow, from the settings."""
    config = windows_config(settings.windows)
    roster = Roster(registry, settings.database.url)
    history = HistoryLoader(settings.database.url, config.lookback)
    return (
        RosterSource(roster, settings.ingest.registry_refresh_s),
        WindowStep(
            config,
            roster,
            history,
            snapshots=settings.windows.snapshots,
            shards=settings.windows.shards,
        ),
    )


__all__ = [
    "PASS_KEY",
    "HistoryLoader",
    "Roster",
    "RosterSource",
    "RosterTick",
    "ShardLogic",
    "ShardState",
    "WindowStep",
    "shard_of",
    "window_key",
    "window_parts",
    "windows_config",
    "windows_step",
]
