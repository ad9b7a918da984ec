"""Panic alert latency, MQTT publish -> NOC WebSocket, under background telemetry load.

    python -m benchmarks.bench_ws_latency [--alerts 1000] [--alert-rate 20]
        [--background 5000] [--devices 500] [--warmup 5]

Every component is real: a private Mosquitto (the project's broker limits), the ingest flow
(``python -m bytewax.run flows.ingest``), ``noc api`` and a scratch database on the local
PostgreSQL/TimescaleDB. A separate process publishes telemetry from ``--devices`` registered
devices at ``--background`` msg/s (QoS 1); this process publishes ``--alerts`` panic alerts
(QoS 1, spread over 50 panic buttons, each with a unique message) and receives them on the
WebSocket as an operator of the tenant. Latency = receive time - the instant before
``publish()``, both on this process's monotonic clock. Reports p50/p95/p99/max, alerts not
received, the background rate achieved (acknowledged by the broker, stored by the flow), where
the time goes (publish -> ingest transaction start -> WebSocket) and, for scale, the latency
of a one-row INSERT + COMMIT on the same database during the run: an event is published only
after its transaction commits, so the disk's fsync latency is a floor under the whole path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shlex
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from websockets.asyncio.client import connect

from api.auth import issue_token
from benchmarks.load import LeanPublisher
from storage.migrate import migrate
from storage.tokens import record_token
from tests.api.process import ApiProcess
from tests.integration.harness import FlowProcess, PrivateBroker, wait_until
from tests.services import PG_ADMIN_URL, scratch_database

SECRET = "bench-ws-latency-secret-0123456789abcdef"
PANIC_BUTTONS = 50


def seed(url: str, devices: int) -> None:
    """One tenant, one site, ``devices`` telemetry devices and the panic buttons."""
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        conn.execute(
            "INSERT INTO tenants (tenant_id, name) VALUES (1, 'bench');"
            "INSERT INTO sites (site_id, tenant_id, name, lat, lon)"
            " VALUES (1, 1, 'Bench site', 12.97, 77.59)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO devices (device_id, tenant_id, site_id, kind, reporting_interval_s)"
                " VALUES (%s, 1, 1, %s, 60)",
                [(f"tm-{i:05d}", "sensor") for i in range(devices)]
                + [(f"pb-{i:03d}", "panic_button") for i in range(PANIC_BUTTONS)],
            )


def _client(port: int, name: str) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def background(
    port: int, rate: float, devices: int, index: int, stop: Any, acked: Any, nice: int
) -> None:
    """Child process ``index``: telemetry at ``rate`` msg/s (QoS 1) through a
    :class:`~benchmarks.load.LeanPublisher`, until ``stop``; ``acked`` counts PUBACKs. At most
    2,000 messages are left unacknowledged, so a broker or flow that cannot keep up shows as a
    lower rate, not as a local queue.

    Runs at ``nice`` (10 by default): the devices are not on the NOC's machine in a real
    deployment, and on a 2-core machine a load generator at equal priority takes the CPU
    time the system under test would have. The achieved rate is reported either way."""
    if nice:
        os.nice(nice)
    publisher = LeanPublisher("127.0.0.1", port, f"bench-background-{index}", window=2000)

    def make(n: int, now: str) -> tuple[str, bytes]:
        payload = json.dumps(
            {"battery": 20 + n % 80, "signal": -60 - n % 30, "temperature": 21.5,
             "timestamp": now, "message_id": f"bg{index}-{n}"}
        )  # fmt: skip
        return f"device/tm-{(n * 7 + index) % devices:05d}/telemetry", payload.encode()

    def stopped() -> bool:
        acked.value = publisher.acked
        return bool(stop.is_set())

    publisher.run(rate, make, stopped)
    acked.value = publisher.acked
    publisher.close()


class Receiver:
    """A WebSocket client on its own event loop thread, timestamping bench alerts."""

    def __init__(self, ws_url: str, token: str) -> None:
        self.url = ws_url
        self.token = token
        self.seen: dict[int, float] = {}
        self.event_ts: dict[int, float] = {}
        self.connected = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._task: Any = None
        self._ws: Any = None

    def start(self) -> Receiver:
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        if not self.connected.wait(15):
            raise RuntimeError("the WebSocket did not connect")
        return self

    async def _run(self) -> None:
        async with connect(
            self.url,
            subprotocols=["noc.v1", f"bearer.{self.token}"],
            max_size=None,  # type: ignore[list-item]
        ) as ws:
            self._ws = ws
            async for raw in ws:
                at = time.perf_counter()
                message = json.loads(raw)
                if message.get("type") == "connected":
                    self.connected.set()
                    continue
                text = (message.get("data") or {}).get("message") or ""
                if message.get("type") in ("alert", "alert_update") and text.startswith("bench #"):
                    n = int(text[7:])
                    self.seen.setdefault(n, at)
                    self.event_ts.setdefault(n, datetime.fromisoformat(message["ts"]).timestamp())

    def stop(self) -> None:
        """Close the socket, let the reader finish, stop the loop."""
        if self._ws is not None:
            asyncio.run_coroutine_threadsafe(self._ws.close(), self._loop).result(10)
        if self._task is not None:
            self._task.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class CommitProbe:
    """Times a one-row committed INSERT every 50 ms on the same database: the floor that any
    "publish only after commit" pipeline sits on (fsync latency of this machine's disk)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CommitProbe:
        self._thread.start()
        return self

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (at timestamptz)")
            while not self._stop.is_set():
                started = time.perf_counter()
                conn.execute("INSERT INTO bench_commit_probe VALUES (now())")
                self.samples.append((time.perf_counter() - started) * 1000)
                self._stop.wait(0.05)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join(10)
        return self.samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def stored_telemetry(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    return int(row[0]) if row else 0


def receipt_times(url: str) -> dict[int, float]:
    """When the flow received each bench alert (``received_at``, stamped by the MQTT source)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT message, received_at FROM device_alerts WHERE message LIKE 'bench #%%'"
        ).fetchall()
    return {int(m[7:]): r.timestamp() for m, r in rows}


def run(args: argparse.Namespace) -> dict[str, Any]:
    broker = PrivateBroker().start()
    try:
        with scratch_database(PG_ADMIN_URL, prefix="noc_bench_ws") as url:
            seed(url, args.devices)
            token, record = issue_token(SECRET, 1, "operator", "bench", timedelta(hours=2))
            with psycopg.connect(url, autocommit=True) as conn:
                record_token(conn, record)
            flow = FlowProcess(url, broker.port)
            if args.flow_batch is not None:
                flow.env["NOC_BATCH_MAX_ROWS"] = str(args.flow_batch)
            for setting in args.flow_setting:
                name, _, value = setting.partition("=")
                flow.env[name] = value
            flow.start()
            api = ApiProcess(url, SECRET, NOC_MQTT_PORT=str(broker.port), NOC_LOG_LEVEL="WARNING")
            try:
                wait_until(lambda: "connected to" in flow.output(), 60, "flow subscription")
                api.start()
                return measure(args, url, broker.port, api, token, flow)
            finally:
                api.stop()
                flow.stop()
                flow.drop_sessions(broker.port)
    finally:
        broker.close()


def measure(
    args: argparse.Namespace, url: str, port: int, api: ApiProcess, token: str, flow: FlowProcess
) -> dict[str, Any]:
    ws_url = api.url.replace("http://", "ws://") + "/ws"
    receiver = Receiver(ws_url, token).start()
    stop = multiprocessing.Event()
    acked = [multiprocessing.Value("q", 0) for _ in range(args.publishers)]
    share = args.background / args.publishers
    publishers = [
        multiprocessing.Process(
            target=background, args=(port, share, args.devices, i, stop, a, args.load_nice)
        )
        for i, a in enumerate(acked)
    ]
    if args.background:
        for p in publishers:
            p.start()
    panic = _client(port, "bench-panic")
    sent: dict[int, float] = {}
    sent_wall: dict[int, float] = {}
    try:
        time.sleep(args.warmup)
        probe = CommitProbe(url).start()
        bg_start, rows_start, t_start = (
            sum(a.value for a in acked),
            stored_telemetry(url),
            time.perf_counter(),
        )
        interval = 1.0 / args.alert_rate
        next_at = time.perf_counter()
        for i in range(args.alerts):
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
            payload = json.dumps(
                {"severity": "critical", "message": f"bench #{i}",
                 "timestamp": datetime.now(UTC).isoformat()}
            )  # fmt: skip
            sent_wall[i] = time.time()
            sent[i] = time.perf_counter()
            panic.publish(f"alert/panic/pb-{i % PANIC_BUTTONS:03d}", payload, qos=1)
        t_end = time.perf_counter()
        commits = probe.stop()
        bg_end, rows_end = sum(a.value for a in acked), stored_telemetry(url)
        deadline = time.monotonic() + 30
        while len(receiver.seen) < args.alerts and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        if args.background:
            for p in publishers:
                p.join(30)
        panic.disconnect()
        panic.loop_stop()
        receiver.stop()
    assert flow.alive(), flow.output()
    latencies = [(receiver.seen[i] - sent[i]) * 1000 for i in sent if i in receiver.seen]
    if args.csv:
        with open(args.csv, "w", encoding="utf-8") as out:
            out.write("alert,sent_s,latency_ms,to_transaction_ms\n")
            for i in sorted(sent):
                if i in receiver.seen:
                    lat = (receiver.seen[i] - sent[i]) * 1000
                    txn = (receiver.event_ts[i] - sent_wall[i]) * 1000
                    out.write(f"{i},{sent[i] - t_start:.3f},{lat:.2f},{txn:.2f}\n")
    # Where the time goes: received_at is when the flow's MQTT client took the message; the
    # event's ts is when the ingest transaction appended it, just before its commit (same host
    # clock as this process).
    to_txn = [(receiver.event_ts[i] - sent_wall[i]) * 1000 for i in sent if i in receiver.seen]
    received = receipt_times(url)
    to_flow = [
        (received[i] - sent_wall[i]) * 1000 for i in sent if i in receiver.seen and i in received
    ]
    window = t_end - t_start
    return {
        "latencies_ms": latencies,
        "to_transaction_ms": to_txn,
        "to_flow_ms": to_flow,
        "commit_ms": commits,
        "missing": len(sent) - len(latencies),
        "bg_published_rate": (bg_end - bg_start) / window,
        "bg_stored_rate": (rows_end - rows_start) / window,
        "backlog_start": max(bg_start - rows_start, 0),  # the acked count is read every 10 ms
        "backlog_end": max(bg_end - rows_end, 0),
        "window_s": window,
    }


def report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    lat: list[float] = r["latencies_ms"]
    command = "python -m benchmarks.bench_ws_latency " + shlex.join(sys.argv[1:])
    print("\nNOC Stream: panic alert, MQTT publish -> WebSocket event (real broker, flow, API, DB)")
    print(f"command:     {command.strip()}")
    print(f"window:      {r['window_s']:.1f} s, {args.alerts} alerts at {args.alert_rate:g}/s")
    print(
        f"background:  target {args.background} msg/s telemetry from {args.devices} devices"
        f" ({args.publishers} publisher processes at nice {args.load_nice});"
        f"\n             acknowledged by the broker {r['bg_published_rate']:.0f} msg/s,"
        f" stored by the flow {r['bg_stored_rate']:.0f} rows/s"
        f"\n             acknowledged but not yet stored: {r['backlog_start']} at the start of the"
        f" window, {r['backlog_end']} at its end"
    )
    print(f"alerts:      {len(lat)} received, {r['missing']} missing\n")
    if not lat:
        print("no alert reached the WebSocket")
        return
    rows = [
        ("p50", statistics.median(lat)),
        ("p95", percentile(lat, 95)),
        ("p99", percentile(lat, 99)),
        ("max", max(lat)),
        ("mean", statistics.fmean(lat)),
    ]
    print("| latency | ms |")
    print("|---------|---:|")
    for name, value in rows:
        print(f"| {name:<7} | {value:7.1f} |")
    txn = r["to_transaction_ms"]
    rest = [a - b for a, b in zip(lat, txn, strict=True)]
    flow = r["to_flow_ms"]
    steps = [a - b for a, b in zip(txn, flow, strict=True)] if len(flow) == len(txn) else []
    print("\nbreakdown, p50 / p99 ms (event ts = appended by the ingest transaction, pre-commit):")
    parts = [("publish -> flow's MQTT client", flow), ("flow steps -> event appended", steps)]
    if not flow or not steps:
        parts = [("publish -> event appended", txn)]
    for name, values in (*parts, ("commit + fan-out -> client", rest)):
        print(f"  {name:<30} {statistics.median(values):6.1f} / {percentile(values, 99):6.1f}")
    commits = r["commit_ms"]
    if commits:
        print(
            f"  (one-row INSERT + COMMIT on the same database meanwhile: p50"
            f" {statistics.median(commits):.1f} / p99 {percentile(commits, 99):.1f} ms,"
            f" max {max(commits):.1f} ms)"
        )
    p99 = rows[2][1]
    verdict = "met" if p99 < 50 and not r["missing"] else "NOT met"
    print(f"\ntarget p99 < 50 ms: {verdict} (p99 = {p99:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000, help="panic alerts to time (1000)")
    parser.add_argument("--alert-rate", type=float, default=20.0, help="alerts per second (20)")
    parser.add_argument("--background", type=int, default=5000, help="telemetry msg/s (5000)")
    parser.add_argument("--devices", type=int, default=500, help="telemetry devices (500)")
    parser.add_argument(
        "--publishers", type=int, default=1, help="background publisher processes (1)"
    )
    parser.add_argument("--csv", default=None, help="write per-alert latencies to this file")
    parser.add_argument(
        "--flow-batch",
        type=int,
        default=None,
        help="NOC_BATCH_MAX_ROWS for the flow (default: the project default)",
    )
    parser.add_argument(
        "--load-nice",
        type=int,
        default=10,
        help="nice value of the background publishers (10; 0 = same priority as the system)",
    )
    parser.add_argument(
        "--flow-setting",
        action="append",
        default=[],
        metavar="NOC_NAME=VALUE",
        help="a setting for the flow process (repeatable)",
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load first (5)")
    args = parser.parse_args()
    report(args, run(args))


if __name__ == "__main__":
    main()
