"""Acknowledging tells the device: the command arrives on the real Mosquitto; and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from notifier.errors import CommandPublishError
from notifier.mqtt_commands import command_topic, publish_command
from operators.records import DeviceCommand
from storage.alerts import acknowledge
from storage.writer import BatchWriter
from tests.integration.harness import free_port
from tests.notifier.support import alarm, migrated_scratch, reset, wait_for

pytestmark = pytest.mark.integration
TEMPLATE = "device/{device_id}/commands"


@pytest.fixture(scope="module")
def shared_db(postgres: str) -> Iterator[str]:
    yield from migrated_scratch(postgres)


@pytest.fixture
def db(shared_db: str) -> str:
    return reset(shared_db)


class Subscriber:
    """A paho client subscribed (QoS 1) to one topic, collecting payloads."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[tuple[str, int, dict[str, Any]]] = []
        subscribed = threading.Event()
        self._client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)

        def on_connect(client: mqtt.Client, *_: Any) -> None:
            client.subscribe(topic, qos=1)

        def on_subscribe(*_: Any) -> None:
            subscribed.set()

        def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            self.messages.append((msg.topic, msg.qos, json.loads(msg.payload)))

        self._client.on_connect = on_connect
        self._client.on_subscribe = on_subscribe
        self._client.on_message = on_message
        self._client.connect(host, port)
        self._client.loop_start()
        assert subscribed.wait(10), "no SUBACK from the broker"

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def device(mqtt_broker: tuple[str, int]) -> Iterator[tuple[str, Subscriber]]:
    device_id = f"pb-{uuid.uuid4().hex[:8]}"  # the shared broker may carry other tests' traffic
    sub = Subscriber(*mqtt_broker, TEMPLATE.format(device_id=device_id))
    yield device_id, sub
    sub.close()


def test_acknowledging_sends_alert_ack_to_the_device(
    db: str, mqtt_broker: tuple[str, int], device: tuple[str, Subscriber]
) -> None:
    device_id, sub = device
    [opened] = BatchWriter(db).write([alarm(1, device_id)]).alerts
    with psycopg.connect(db, autocommit=True) as conn:
        result = acknowledge(conn, 1, opened.alert_id, "alice")
    assert result.command is not None
    topic = publish_command(*mqtt_broker, TEMPLATE, result.command)
    assert topic == f"device/{device_id}/commands"
    wait_for(lambda: sub.messages, 10, "the command on the device topic")
    [(got_topic, qos, payload)] = sub.messages
    assert (got_topic, qos) == (topic, 1)
    assert payload == {
        "type": "alert_ack", "alert_id": opened.alert_id, "alert_type": "panic", "by": "alice",
        "at": result.alert.acknowledged_at.isoformat() if result.alert.acknowledged_at else None,
    }  # fmt: skip


def test_unreachable_broker_is_a_one_line_error() -> None:
    port = free_port()
    with pytest.raises(
        CommandPublishError, match=f"cannot reach the MQTT broker at 127.0.0.1:{port}"
    ):
        publish_command("127.0.0.1", port, TEMPLATE, DeviceCommand("d-1", {"type": "x"}))


@pytest.mark.parametrize("device_id", ["", "a/b", "a+", "#"])
def test_device_ids_that_would_change_the_topic_are_refused(device_id: str) -> None:
    with pytest.raises(CommandPublishError, match="cannot be used in a topic"):
        command_topic(TEMPLATE, device_id)


def noc(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOC_")}
    env["NOC_DATABASE_URL"] = db
    return subprocess.run(
        [sys.executable, "-m", "noc", *args], capture_output=True, text=True, env=env,
        timeout=120, check=False,
    )  # fmt: skip


def test_cli_lists_acknowledges_and_shows_history(db: str, device: tuple[str, Subscriber]) -> None:
    device_id, sub = device
    [opened] = BatchWriter(db).write([alarm(1, device_id)]).alerts
    alert_id = str(opened.alert_id)
    listed = noc(db, "alerts", "list", "--tenant", "1", "--status", "open")
    assert listed.returncode == 0, listed.stderr
    assert alert_id in listed.stdout and "panic" in listed.stdout

    acked = noc(
        db, "alerts", "ack", alert_id, "--tenant", "1", "--by", "alice", "--note", "en route"
    )
    assert acked.returncode == 0, acked.stderr
    assert f"alert {alert_id} acknowledged by alice at " in acked.stdout
    assert f"sent alert_ack to device/{device_id}/commands" in acked.stdout
    wait_for(lambda: sub.messages, 10, "the CLI's command on the device topic")
    assert sub.messages[0][2]["by"] == "alice"

    again = noc(db, "alerts", "ack", alert_id, "--tenant", "1", "--by", "bob")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"noc: error: alert {alert_id} is acknowledged; it cannot become acknowledged"
    ]
    foreign = noc(db, "alerts", "resolve", alert_id, "--tenant", "2", "--by", "mallory")
    assert (foreign.returncode, foreign.stderr.strip()) == (
        2,
        f"noc: error: alert {alert_id} not found",
    )

    closed = noc(db, "alerts", "false-alarm", alert_id, "--tenant", "1", "--by", "bob")
    assert closed.returncode == 0, closed.stderr
    shown = noc(db, "alerts", "show", alert_id, "--tenant", "1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "(false_alarm)" in lines[0]
    history = [line.split()[1:4] for line in lines if line.startswith("  20")]
    assert history == [["opened", "by", "system"], ["acknowledged", "by", "alice"],
                       ["false_alarm", "by", "bob"]]  # fmt: skip
    assert "(en route)" in shown.stdout
