"""The priority lane's dataflow: priority topics (panics) -> stored alerts, in a process of its own.

Started by the ingest flow (:mod:`flows.priority_lane`) as ``python -m flows.priority
--report-fd N``; not meant to be run by hand. It consumes the priority partition alone
(client id ``PREFIX-priority``), with the same decode, enrich and severity steps as the ingest
flow, and stores through the same sink: an alert change is committed in its own transaction
before the MQTT message is acknowledged. Windows and the geofence are the bulk flow's: they
see the bulk copy of every message this lane stores (priority topics never match guard
positions, see ``NOC_MQTT_PRIORITY_TOPICS``).

It reports to the ingest flow through the pipe ``N`` and exits when its standard input (a pipe
from the ingest flow) closes.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main

from flows.ingest import command_publisher, source_config, start_metrics, tune_gc
from flows.mqtt_source import LaneReporter, MqttSource
from flows.priority_lane import PipeReporter, exit_with_parent
from flows.steps import EnrichStep, decode_batch
from flows.storage_sink import StorageSink
from noc import logs
from noc.errors import NocError
from noc.settings import Settings, load_settings
from operators.severity import SeverityConfig
from storage.registry import RegistryCache


def build_priority_flow(s: Settings, reporter: LaneReporter | None) -> Dataflow:
    """Wire the priority lane's steps (``s.mqtt.priority_topics`` must not be empty)."""
    source = MqttSource(source_config(s, priority_only=True), reporter=reporter)
    registry = RegistryCache(s.database.url, s.ingest.registry_refresh_s)
    flow = Dataflow("noc_priority")
    inbound = op.input("mqtt", flow, source)
    # Inbound(topic, payload, received_at, token) from PREFIX-priority
    decoded = op.flat_map_batch("decode", inbound, decode_batch)
    # Envelope(item=DeviceAlert | SensorReading | ... | DeadLetter)
    enriched = op.map("enrich", decoded, EnrichStep(registry, SeverityConfig().build()))
    # Envelope(item=Enriched(record, tenant, site, device, alerts) | DeadLetter)
    op.output(
        "store",
        enriched,
        StorageSink(
            s.database.url,
            command_publisher(s),
            bulk_max_rows=s.ingest.store_max_rows,
            name="noc-priority",
        ),
    )
    # alert changes committed at once (dead letters by the background writer); then PUBACKs
    return flow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.priority", description=__doc__)
    parser.add_argument("--report-fd", type=int, required=True, help="pipe to the ingest flow")
    args = parser.parse_args(argv)
    exit_with_parent()
    try:
        s = load_settings()
    except NocError as exc:
        print(f"priority lane: {exc}", file=sys.stderr)
        return 2
    logs.configure(s.log_level)
    sys.setswitchinterval(s.ingest.switch_interval_ms / 1000)
    try:
        start_metrics(s.ingest.priority_metrics_port)
    except OSError as exc:
        port = s.ingest.priority_metrics_port
        print(
            f"priority lane: cannot serve metrics on 127.0.0.1:{port} ({exc.strerror}); "
            "set NOC_PRIORITY_METRICS_PORT to a free port or 0",
            file=sys.stderr,
        )
        return 2
    flow = build_priority_flow(s, PipeReporter(args.report_fd))
    tune_gc()
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT from the ingest flow: stop
        cli_main(flow, epoch_interval=timedelta(seconds=10))  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    sys.exit(main())
