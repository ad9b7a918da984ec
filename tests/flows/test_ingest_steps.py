"""The ingest steps wired as in flows/ingest.py, fed by Bytewax's TestingSource.

The registry is a fixed snapshot (the thing under test is the step wiring, not the registry's
database); the geofence hysteresis rebuilds guard state from a real (empty) database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.envelope import Envelope, Inbound
from flows.geofence import FenceHysteresis, GeofenceStep, judge_fixes
from flows.steps import EnrichStep, decode_batch
from operators.fence_alerts import FenceAlertConfig
from operators.geofence import zone_from_geojson
from operators.geofence_hysteresis import GeofenceConfig
from operators.records import DeadLetter, Enriched
from operators.registry import DeviceEntry, GuardEntry, RegistrySnapshot
from operators.severity import SeverityConfig

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
ZONE = zone_from_geojson(
    {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[77.590, 12.970], [77.592, 12.970], [77.592, 12.972],
                             [77.590, 12.972], [77.590, 12.970]]],
        },
        "properties": {"zone_id": 1, "tenant_id": 1, "site_id": 1, "name": "yard"},
    }
)  # fmt: skip
SNAPSHOT = RegistrySnapshot(
    version=1,
    devices={
        "gd-7": DeviceEntry("gd-7", 1, 1, 7, "guard_device"),
        "pb-1": DeviceEntry("pb-1", 1, 1, None, "panic_button"),
    },
    guards={7: GuardEntry(7, 1, 1, "gd-7", frozenset({1}))},
    zones={1: ZONE},
)


class FixedRegistry:
    def get(self) -> RegistrySnapshot:
        return SNAPSHOT

    def refresh_soon(self) -> bool:
        return False


def msg(topic: str, body: dict[str, object], seconds: int) -> Inbound:
    return Inbound(topic, json.dumps(body).encode(), T0 + timedelta(seconds=seconds), None)


def gps(seconds: int, lat: float, lon: float) -> Inbound:
    body = {"lat": lat, "lon": lon, "accuracy": 5, "client_id": 1,
            "timestamp": (T0 + timedelta(seconds=seconds)).isoformat()}  # fmt: skip
    return msg("guard/7/gps", body, seconds)


def run(inputs: list[Inbound], database_url: str) -> list[Envelope]:
    out: list[Envelope] = []
    registry = FixedRegistry()
    flow = Dataflow("ingest_steps")
    s = op.input("in", flow, TestingSource(inputs))
    s = op.flat_map_batch("decode", s, decode_batch)
    s = op.map("enrich", s, EnrichStep(registry, SeverityConfig().build()))
    s = op.flat_map_batch("geofence", s, GeofenceStep(registry))
    s = judge_fixes(
        "fence_hysteresis",
        s,
        FenceHysteresis(database_url, GeofenceConfig(3, 10.0), FenceAlertConfig("critical")),
    )
    op.output("out", s, TestingSink(out))
    run_main(flow)
    return out


def test_every_message_reaches_the_sink_once(migrated_db: str) -> None:
    inputs = [
        msg("device/gd-7/telemetry", {"battery": 5}, 0),
        msg("device/nope/telemetry", {"battery": 50}, 1),
        msg("alert/panic/pb-1", {"severity": "critical"}, 2),
        msg("bogus/topic", {}, 3),
        gps(4, 12.971, 77.591),
    ]
    out = run(inputs, migrated_db)
    assert [e.topic for e in out] == [m.topic for m in inputs]  # one envelope per message
    items = [e.item for e in out]
    assert isinstance(items[0], Enriched) and items[0].alerts[0].alert_type == "low_battery"
    assert isinstance(items[1], DeadLetter) and items[1].reason == "unknown_device"
    assert isinstance(items[2], Enriched) and items[2].alerts[0].severity == "critical"
    assert isinstance(items[3], DeadLetter) and items[3].reason == "unknown_topic"
    assert isinstance(items[4], Enriched) and items[4].zone_status == "inside"
    assert items[4].zone_id == 1 and items[4].tenant_id == 1


def test_leaving_the_zone_raises_one_violation_and_coming_back_resolves(
    migrated_db: str,
) -> None:
    inside = [gps(s, 12.971, 77.591) for s in range(0, 30, 5)]
    outside = [gps(s, 12.975, 77.591) for s in range(30, 90, 5)]  # ~330 m north
    back = [gps(s, 12.971, 77.591) for s in range(90, 150, 5)]
    out = run(inside + outside + back, migrated_db)
    alerts = [a for e in out if isinstance(e.item, Enriched) for a in e.item.alerts]
    resolutions = [r for e in out if isinstance(e.item, Enriched) for r in e.item.resolutions]
    commands = [c for e in out if isinstance(e.item, Enriched) for c in e.item.commands]
    assert [(a.alert_type, a.source_id) for a in alerts] == [("geofence_violation", "guard:7")]
    assert [(r.alert_type, r.source_id) for r in resolutions] == [("geofence_violation", "guard:7")]
    assert [(c.device_id, c.payload["type"]) for c in commands] == [("gd-7", "geofence_warning")]
