"""Real processes for integration and fault tests: the flow, a private broker, a private
PostgreSQL cluster. Each starts on its own port so the shared services stay up."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[2]


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class FlowProcess:
    """``python -m bytewax.run flows.ingest`` as a child process."""

    def __init__(self, database_url: str, mqtt_port: int, client_id: str | None = None) -> None:
        self.client_id = client_id or f"noc-test-{uuid.uuid4().hex[:8]}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NOC_")}
        self.env.update(
            NOC_DATABASE_URL=database_url,
            NOC_MQTT_PORT=str(mqtt_port),
            NOC_MQTT_CLIENT_ID=self.client_id,
            NOC_FLOW_METRICS_PORT="0",
            NOC_REGISTRY_REFRESH_S="0.5",
        )
        self.log = tempfile.NamedTemporaryFile(prefix="noc-flow-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def session_ids(self) -> list[str]:
        """The broker sessions the flow creates (one bulk partition and the priority one)."""
        return [f"{self.client_id}-0", f"{self.client_id}-priority"]

    def drop_sessions(self, port: int) -> None:
        """Remove the flow's persistent sessions from the broker on ``port``."""
        for client_id in self.session_ids:
            drop_mqtt_session(port, client_id)

    def start(self) -> FlowProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "flows.ingest"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye to the broker."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def lane_pids(self) -> list[int]:
        """Process ids of the priority lanes the flow has started, oldest first (from its log)."""
        text = Path(self.log.name).read_text(errors="replace")
        return [int(pid) for pid in re.findall(r"priority lane started \(pid (\d+)\)", text)]

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]


class PrivateBroker:
    """Mosquitto from deploy/mosquitto/test-broker.conf.in on a free port, restartable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="noc-broker-"))
        template = (ROOT / "deploy/mosquitto/test-broker.conf.in").read_text()
        conf = template.replace("@PORT@", str(self.port)).replace(
            "@PERSISTENCE_DIR@", str(self.dir)
        )
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] = open(self.dir / "mosquitto.log", "ab")

    def start(self) -> PrivateBroker:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_until(lambda: port_open(self.port), 15, f"mosquitto on {self.port}")
        return self

    def stop(self) -> None:
        """Graceful stop: the broker saves its persistence file."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def restart(self, down_for: float = 1.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivatePostgres:
    """A throwaway PostgreSQL 15 cluster (Debian cluster tools) with TimescaleDB preloaded."""

    def __init__(self) -> None:
        self.port = free_port()
        self.name = f"nocfault{uuid.uuid4().hex[:6]}"
        subprocess.run(
            ["pg_createcluster", "15", self.name, "--port", str(self.port), "--start-conf=manual",
             "--", "--auth=trust"],
            check=True, capture_output=True,
        )  # fmt: skip
        conf_d = Path(f"/etc/postgresql/15/{self.name}/conf.d")
        conf_d.mkdir(parents=True, exist_ok=True)
        (conf_d / "noc.conf").write_text(
            "shared_preload_libraries = 'timescaledb'\n"
            "timescaledb.telemetry_level = off\n"
            "listen_addresses = '127.0.0.1'\n"
        )
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, action: str) -> None:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", "15", self.name, action],
            check=True, capture_output=True,
        )  # fmt: skip

    def start(self) -> PrivatePostgres:
        self._ctl("start")
        wait_until(lambda: port_open(self.port), 30, f"postgres on {self.port}")
        return self

    def stop(self) -> None:
        self._ctl("stop")

    def restart(self, down_for: float = 2.0) -> None:
        self._ctl("stop")
        time.sleep(down_for)
        self.start()

    def create_database(self, name: str = "noc") -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    def close(self) -> None:
        subprocess.run(
            ["pg_dropcluster", "--stop", "15", self.name], check=False, capture_output=True
        )


class Publisher:
    """A QoS 1 publisher with a persistent session that rides out broker restarts."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"noc-test-pub-{uuid.uuid4().hex[:8]}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.2, 2)
        self.connected = threading.Event()
        self.client.on_connect = lambda *_args: self.connected.set()
        self.client.on_disconnect = lambda *_args: self.connected.clear()
        self.client.connect(host, port)
        self.client.loop_start()
        self.connected.wait(10)
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.resent = 0

    def _send(self, topic: str, payload: bytes, qos: int) -> None:
        while True:
            info = self.client.publish(topic, payload, qos=qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.infos.append(info)
                return
            # Not connected: paho keeps its own copy, but we cannot wait on it, so send again
            # once reconnected. The broker may then see the message twice; storage must cope.
            self.resent += 1
            if not self.connected.wait(60):
                raise AssertionError("publisher could not reconnect to the broker")

    def publish(
        self, messages: Iterable[tuple[str, bytes]], rate: float | None = None, qos: int = 1
    ) -> int:
        interval = 1.0 / rate if rate else 0.0
        next_at = time.monotonic()
        n = 0
        for topic, payload in messages:
            self._send(topic, payload, qos)
            n += 1
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        return n

    def wait_all(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for info in self.infos:
            remaining = deadline - time.monotonic()
            info.wait_for_publish(timeout=max(remaining, 0.1))
            if not info.is_published():
                raise AssertionError("a QoS 1 publish was not acknowledged by the broker")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_in_background(
    publisher: Publisher, messages: list[tuple[str, bytes]], rate: float
) -> threading.Thread:
    thread = threading.Thread(target=publisher.publish, args=(messages, rate), daemon=True)
    thread.start()
    return thread


def drop_mqtt_session(port: int, client_id: str) -> None:
    """Remove a persistent session (and its queue) from a broker."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    try:
        client.connect("127.0.0.1", port)
        client.loop_start()
        time.sleep(0.2)
        client.disconnect()
        client.loop_stop()
    except OSError:
        pass


@contextmanager
def running_flow(database_url: str, mqtt_port: int) -> Iterator[FlowProcess]:
    flow = FlowProcess(database_url, mqtt_port).start()
    try:
        yield flow
    finally:
        flow.stop()
        flow.drop_sessions(mqtt_port)
