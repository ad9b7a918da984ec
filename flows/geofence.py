"""Geofence steps of the ingest flow: batch classification, then per-guard hysteresis.

:class:`GeofenceStep` keeps a :class:`~operators.geofence_index.ZoneIndex` in step with the
registry (zones are upserted / removed in place when the registry version changes) and
classifies every position of a batch in one vectorised query. :class:`FenceHysteresis` is the
keyed, stateful part: one :class:`~operators.geofence_hysteresis.GeofenceTracker` per guard.

After a restart a guard's tracker is rebuilt from the database: a guard with an open
``geofence_violation`` alert starts confirmed outside (so the violation is not raised twice),
and fixes at or before the guard's last stored position are not fed again. Redelivered fixes
that were not stored yet are processed normally, so nothing is lost either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import bytewax.operators as op
import psycopg
from bytewax.dataflow import Stream

from flows.envelope import Envelope
from flows.steps import source_of
from operators.fence_alerts import ALERT_TYPE, FenceAlertConfig, fence_actions
from operators.geofence_hysteresis import (
    Debounce,
    GeofenceConfig,
    GeofenceTracker,
    GuardFenceState,
)
from operators.geofence_index import Fix, FixBatch, ZoneIndex, ZoneIndexConfig
from operators.records import Enriched, Position
from operators.registry import RegistrySnapshot, RegistrySource
from storage.db import connect
from storage.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


class GeofenceStep:
    """``flat_map_batch`` mapper: fills zone fields and ``fence`` of positions. Pure CPU."""

    def __init__(self, registry: RegistrySource, index_config: ZoneIndexConfig | None = None):
        self._registry = registry
        self._index: ZoneIndex = (index_config or ZoneIndexConfig()).build()
        self._version = -1
        self._zones: dict[int, object] = {}

    def _sync(self, snapshot: RegistrySnapshot) -> None:
        if snapshot.version == self._version:
            return
        changed = 0
        for zone_id, zone in snapshot.zones.items():
            if self._zones.get(zone_id) != zone:
                self._index.upsert(zone)
                changed += 1
        for zone_id in set(self._zones) - set(snapshot.zones):
            self._index.remove(zone_id)
            changed += 1
        self._zones = dict(snapshot.zones)
        self._version = snapshot.version
        if changed:
            log.info("zone index updated in place: %d zone(s) changed", changed)

    def __call__(self, batch: list[Envelope]) -> list[Envelope]:
        snapshot = self._registry.get()
        self._sync(snapshot)
        todo: list[tuple[Envelope, Enriched, Position]] = []
        fixes: list[Fix] = []
        for env in batch:
            item = env.item
            if not isinstance(item, Enriched) or not isinstance(item.record, Position):
                continue
            guard = snapshot.guards.get(item.record.guard_id)
            if guard is None or not guard.zone_ids:
                continue
            r = item.record
            fixes.append(Fix(item.tenant_id, r.lat, r.lon, r.accuracy or 0.0, r.ts, guard.zone_ids))
            todo.append((env, item, r))
        if fixes:
            results = self._index.query(FixBatch.of(fixes)).results()
            for (env, item, _r), res in zip(todo, results, strict=True):
                env.fence = res
                item.zone_status = res.classification.value
                item.zone_id = res.zone_id
                item.zone_distance_m = round(res.distance_m, 2) if res.zone_id is not None else None
        return batch


@dataclass
class _Resume:
    """What the database remembers of every guard when the flow (re)starts."""

    in_violation: set[int]
    last_us: dict[int, int]


class FenceHysteresis:
    """``stateful_map`` mapper keyed by source; only guards' positions change the state.

    The database is read once, at the first fix after a start: guards with an open violation
    and each guard's last stored fix (within a day). After that only this process raises and
    clears violations for the guards routed to it, so the snapshot cannot go stale.
    """

    def __init__(self, database_url: str, config: GeofenceConfig, alerts: FenceAlertConfig):
        self._url = database_url
        self._config = config
        self._alerts = alerts
        self._resume_data: _Resume | None = None

    def __call__(
        self, tracker: GeofenceTracker | None, env: Envelope
    ) -> tuple[GeofenceTracker | None, Envelope]:
        item = env.item
        if env.fence is None or not isinstance(item, Enriched) or item.guard_id is None:
            return tracker, env
        if tracker is None:
            tracker = self._config.build(item.guard_id, self._resume(item.guard_id))
        events = tracker.on_fix(item.record.ts, env.fence)
        if events:
            actions = fence_actions(item, events, self._alerts)
            item.alerts.extend(actions.alerts)
            item.resolutions.extend(actions.resolutions)
            item.commands.extend(actions.commands)
        return tracker, env

    def _resume(self, guard_id: int) -> GuardFenceState | None:
        """The guard's state as the database remembers it (None: start fresh)."""
        if self._resume_data is None:
            try:
                with connect(self._url, autocommit=True, application_name="noc-geofence") as c:
                    self._resume_data = _load_resume(c)
            except (DatabaseUnavailable, psycopg.Error) as exc:
                log.warning("cannot rebuild geofence state, starting fresh: %s", exc)
                self._resume_data = _Resume(set(), {})
        data = self._resume_data
        in_violation = guard_id in data.in_violation
        last_us = data.last_us.get(guard_id)
        if not in_violation and last_us is None:
            return None
        fence = Debounce(confirmed="outside") if in_violation else Debounce()
        return GuardFenceState(guard_id, last_us, fence, {})


def _load_resume(conn: psycopg.Connection) -> _Resume:
    violating = conn.execute(
        "SELECT guard_id FROM alerts WHERE alert_type = %s AND guard_id IS NOT NULL"
        " AND status IN ('new', 'acknowledged')",
        (ALERT_TYPE,),
    ).fetchall()
    last = conn.execute(
        "SELECT guard_id, (extract(epoch FROM max(ts)) * 1000000)::bigint FROM positions"
        " WHERE ts > now() - interval '1 day' GROUP BY guard_id"
    ).fetchall()
    return _Resume({int(r[0]) for r in violating}, {int(g): int(us) for g, us in last})


__all__ = ["ALERT_TYPE", "FenceHysteresis", "GeofenceStep"]


def judge_fixes(
    step_id: str, up: Stream[Envelope], hysteresis: FenceHysteresis
) -> Stream[Envelope]:
    """Per-guard hysteresis for the fixes that have a geofence answer; everything else passes
    by unkeyed. (Keying every message by its device only to pass it through cost a logic
    object per message and made each of them a key for Bytewax to visit at every epoch.)"""
    fixes = op.branch(f"{step_id}_fixes", up, lambda e: e.fence is not None)
    # trues: Envelope(position, fence=FixResult); falses: every other Envelope
    keyed = op.key_on(f"{step_id}_by_guard", fixes.trues, source_of)
    # ("guard:42", Envelope)
    judged = op.stateful_map(step_id, keyed, hysteresis)
    # ("guard:42", Envelope + violation alert / resolution / device warning)
    return op.merge(f"{step_id}_merged", op.key_rm(f"{step_id}_unkey", judged), fixes.falses)
