"""The ingest dataflow: MQTT -> validated, enriched rows in TimescaleDB, effectively once.

Run it with ``python -m bytewax.run flows.ingest`` (settings from ``NOC_*`` variables).
Messages are acknowledged to the broker only after the transaction holding their rows has
committed; storage skips redelivered messages, so every valid message is stored exactly once.
"""

from __future__ import annotations

import gc
import sys
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from prometheus_client import start_http_server

from flows.commands import CommandPublisher
from flows.geofence import FenceHysteresis, GeofenceStep, judge_fixes
from flows.mqtt_source import MqttSource, MqttSourceConfig
from flows.steps import EnrichStep, decode_step
from flows.storage_sink import StorageSink
from flows.windows import window_key, window_parts
from noc import logs
from noc.settings import Settings, load_settings
from operators.fence_alerts import FenceAlertConfig
from operators.geofence_hysteresis import GeofenceConfig
from operators.severity import SeverityConfig
from storage.registry import RegistryCache

_metrics_started: set[int] = set()


def build_flow(settings: Settings | None = None) -> Dataflow:
    """Wire the ingest steps. Starts the metrics endpoint once per process."""
    s = settings or load_settings()
    logs.configure(s.log_level)
    sys.setswitchinterval(s.ingest.switch_interval_ms / 1000)
    port = s.ingest.metrics_port
    if port and port not in _metrics_started:
        start_http_server(port, addr="127.0.0.1")
        _metrics_started.add(port)
    source = MqttSource(
        MqttSourceConfig(
            host=s.mqtt.host,
            port=s.mqtt.port,
            client_id_prefix=s.mqtt.client_id,
            partitions=s.mqtt.partitions,
            keepalive_s=s.mqtt.keepalive_s,
            username=s.mqtt.username,
            password=s.mqtt.password,
            batch_max=s.ingest.batch_max_rows,
            idle_wait=timedelta(milliseconds=s.ingest.batch_max_wait_ms),
            outbound_template=s.mqtt.commands_topic,
            priority_topics=s.mqtt.priority_topics,
        )
    )
    registry = RegistryCache(s.database.url, s.ingest.registry_refresh_s)
    enrich_step = EnrichStep(registry, SeverityConfig().build())
    hysteresis = FenceHysteresis(
        s.database.url,
        GeofenceConfig(
            confirm_fixes=s.geofence.confirm_fixes, confirm_seconds=s.geofence.confirm_seconds
        ),
        FenceAlertConfig(severity=s.geofence.violation_severity),
    )

    def commands() -> CommandPublisher:
        return CommandPublisher(s.mqtt.host, s.mqtt.port, s.mqtt.commands_topic, s.mqtt.client_id)

    flow = Dataflow("noc_ingest")
    inbound = op.input("mqtt", flow, source)
    # Inbound(topic, payload, received_at, token)
    decoded = op.map("decode", inbound, decode_step)
    # Envelope(item=Telemetry | Position | SensorReading | DeviceAlert | SystemHealth | DeadLetter)
    enriched = op.map("enrich", decoded, enrich_step)
    # Envelope(item=Enriched(record, tenant, site, guard, device, alerts) | DeadLetter)
    fenced = op.flat_map_batch("geofence", enriched, GeofenceStep(registry))
    # Envelope(... positions with zone_status / zone_id / distance, fence=FixResult)
    judged = judge_fixes("fence_hysteresis", fenced, hysteresis)
    # Envelope (+ geofence violation alert / resolution / device warning for a guard's fix)
    roster_source, window_step = window_parts(s, registry)
    roster = op.input("roster", flow, roster_source)
    # RosterTick(Subject | removed): every registered device / guard at start, then changes
    merged = op.merge("with_roster", judged, roster)
    # Envelope | RosterTick
    by_subject = op.key_on("by_subject", merged, window_key)
    # ("1:gd-1" | "1:guard:7" | "-", Envelope | RosterTick)
    windowed = op.stateful("windows", by_subject, window_step.build)
    # (key, Envelope + back-online resolution) | (key, derived(DerivedAlerts)) from timers
    stored = op.key_rm("unkey_windows", windowed)
    # Envelope
    op.output(
        "store",
        stored,
        StorageSink(s.database.url, commands, bulk_max_rows=s.ingest.store_max_rows),
    )
    # alert changes committed at once, the rest by a background writer; then PUBACKs, commands
    gc.freeze()  # what exists now lives as long as the process: keep it out of GC passes
    return flow


def __getattr__(name: str) -> Dataflow:
    """``python -m bytewax.run flows.ingest`` asks for ``flow``: build it on demand."""
    if name == "flow":
        return build_flow()
    raise AttributeError(name)
