"""Publish one device command (QoS 1) and wait for the broker's PUBACK.

For callers outside the flow (the API, the CLI) that act on one alert at a time: connect,
publish on ``topic_template.format(device_id=...)``, wait for the PUBACK, disconnect. The flow
uses its long-lived ``flows.commands.CommandPublisher`` instead.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from notifier.errors import CommandPublishError
from operators.records import DeviceCommand


def command_topic(topic_template: str, device_id: str) -> str:
    """The command topic of a device; rejects ids that would change the topic's shape."""
    if not device_id or any(c in device_id for c in "/+#\0"):
        raise CommandPublishError(f"device id {device_id!r} cannot be used in a topic")
    return topic_template.format(device_id=device_id)


def publish_command(
    host: str,
    port: int,
    topic_template: str,
    command: DeviceCommand,
    *,
    username: str = "",
    password: str = "",
    timeout_s: float = 10.0,
) -> str:
    """Publish ``command`` at QoS 1; return the topic once the broker has acknowledged it.

    Raises :class:`CommandPublishError` when the broker cannot be reached, refuses the
    connection, or does not acknowledge within ``timeout_s``.
    """
    topic = command_topic(topic_template, command.device_id)
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(
        client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        del client, userdata, flags, properties
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, clean_session=True,
        protocol=mqtt.MQTTv311,
    )  # fmt: skip
    client.on_connect = on_connect
    if username:
        client.username_pw_set(username, password or None)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise CommandPublishError(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from exc
    client.loop_start()
    try:
        if not connected.wait(timeout_s) or refused:
            why = refused[0] if refused else "no CONNACK"
            raise CommandPublishError(f"MQTT broker {host}:{port} refused the connection: {why}")
        info = client.publish(topic, json.dumps(command.payload), qos=1)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise CommandPublishError(f"no PUBACK for {topic} within {timeout_s:g}s")
    except (RuntimeError, ValueError) as exc:
        raise CommandPublishError(f"publishing to {topic} failed: {exc}") from exc
    finally:
        client.disconnect()
        client.loop_stop()
    return topic
