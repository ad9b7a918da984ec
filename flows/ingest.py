"""The ingest dataflow: MQTT -> validated, enriched rows in TimescaleDB, effectively once.

Run it with ``python -m bytewax.run flows.ingest`` (settings from ``NOC_*`` variables).
Messages are acknowledged to the broker only after the transaction holding their rows has
committed; storage skips redelivered messages, so every valid message is stored exactly once.

The priority topics (panics) are consumed by the priority lane, a small dataflow of their own
(:mod:`flows.priority`) that this flow starts as a child process and pairs copies with
(:mod:`flows.priority_lane`, :mod:`flows.handoff`).
"""

from __future__ import annotations

import atexit
import gc
import sys
from collections.abc import Callable
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from prometheus_client import start_http_server

from flows.commands import CommandPublisher
from flows.geofence import FenceHysteresis, GeofenceStep, judge_fixes
from flows.handoff import handoff_for
from flows.mqtt_source import MqttSource, MqttSourceConfig
from flows.priority_lane import PriorityLane
from flows.steps import EnrichStep, decode_batch
from flows.storage_sink import StorageSink
from flows.windows import window_parts, windows_step
from noc import logs
from noc.settings import Settings, load_settings
from operators.fence_alerts import FenceAlertConfig
from operators.geofence_hysteresis import GeofenceConfig
from operators.severity import SeverityConfig
from storage.registry import RegistryCache

_metrics_started: set[int] = set()


def start_metrics(port: int) -> None:
    """Serve this process's Prometheus /metrics on 127.0.0.1:``port`` (0: not at all), once."""
    if port and port not in _metrics_started:
        start_http_server(port, addr="127.0.0.1")
        _metrics_started.add(port)


def source_config(s: Settings, priority_only: bool = False) -> MqttSourceConfig:
    """The MQTT source of the bulk flow, or (``priority_only``) of the priority lane."""
    poll_ms = s.ingest.priority_poll_ms if priority_only else s.ingest.batch_max_wait_ms
    return MqttSourceConfig(
        host=s.mqtt.host,
        port=s.mqtt.port,
        client_id_prefix=s.mqtt.client_id,
        partitions=s.mqtt.partitions,
        keepalive_s=s.mqtt.keepalive_s,
        username=s.mqtt.username,
        password=s.mqtt.password,
        batch_max=s.ingest.batch_max_rows,
        idle_wait=timedelta(milliseconds=poll_ms),
        outbound_template=s.mqtt.commands_topic,
        priority_topics=s.mqtt.priority_topics,
        priority_only=priority_only,
    )


def command_publisher(s: Settings) -> Callable[[], CommandPublisher]:
    """Builds the sink's publisher of device commands (one per worker)."""

    def commands() -> CommandPublisher:
        return CommandPublisher(s.mqtt.host, s.mqtt.port, s.mqtt.commands_topic, s.mqtt.client_id)

    return commands


def start_priority_lane(s: Settings) -> None:
    """Start the priority lane's process (none without priority topics); stopped at exit."""
    if s.mqtt.priority_topics:
        lane = PriorityLane(handoff_for(s.mqtt.client_id), [sys.executable, "-m", "flows.priority"])
        atexit.register(lane.start().close)


def build_flow(settings: Settings | None = None) -> Dataflow:
    """Wire the ingest steps. Starts the metrics endpoint once per process and the priority
    lane's process."""
    s = settings or load_settings()
    logs.configure(s.log_level)
    sys.setswitchinterval(s.ingest.switch_interval_ms / 1000)
    start_metrics(s.ingest.metrics_port)
    source = MqttSource(source_config(s))
    start_priority_lane(s)
    registry = RegistryCache(s.database.url, s.ingest.registry_refresh_s)
    enrich_step = EnrichStep(registry, SeverityConfig().build())
    hysteresis = FenceHysteresis(
        s.database.url,
        GeofenceConfig(
            confirm_fixes=s.geofence.confirm_fixes, confirm_seconds=s.geofence.confirm_seconds
        ),
        FenceAlertConfig(severity=s.geofence.violation_severity),
    )

    flow = Dataflow("noc_ingest")
    inbound = op.input("mqtt", flow, source)
    # Inbound(topic, payload, received_at, token, elsewhere: stored by the priority lane)
    decoded = op.flat_map_batch("decode", inbound, decode_batch)
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
    stored = windows_step("windows", merged, window_step)
    # Envelope (+ back-online resolution) | derived(DerivedAlerts) from timers
    op.output(
        "store",
        stored,
        StorageSink(s.database.url, command_publisher(s), bulk_max_rows=s.ingest.store_max_rows),
    )
    # alert changes committed at once, the rest by a background writer; then PUBACKs, commands
    tune_gc()
    return flow


def tune_gc() -> None:
    """Freeze what exists now (it lives as long as the process) and collect less often.

    The flow allocates a few dozen objects per message; with Python's default threshold
    (700) the collector runs a hundred times a second and its older generations keep walking
    every subject's windows: measured, that doubled the windows' cost per message once the
    windows were full. 50,000 allocations between young collections is about 0.2 s at
    5,000 msg/s; a young collection then takes a few milliseconds.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def __getattr__(name: str) -> Dataflow:
    """``python -m bytewax.run flows.ingest`` asks for ``flow``: build it on demand."""
    if name == "flow":
        return build_flow()
    raise AttributeError(name)
