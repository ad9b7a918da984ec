"""Publishes device commands (QoS 1) after the batch that caused them has committed."""

from __future__ import annotations

import json
import logging
import os

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from flows import metrics
from operators.records import DeviceCommand

log = logging.getLogger(__name__)


class CommandPublisher:
    """A paho client of its own; paho queues QoS 1 messages while the broker is away."""

    def __init__(self, host: str, port: int, topic_template: str, client_id_prefix: str) -> None:
        self._topic_template = topic_template
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{client_id_prefix}-commands-{os.getpid()}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        self._client.max_queued_messages_set(0)  # unlimited: never drop a command locally
        self._client.reconnect_delay_set(1, 10)
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()

    def publish(self, commands: list[DeviceCommand]) -> None:
        """Queue the commands for delivery. Must not block."""
        for command in commands:
            topic = self._topic_template.format(device_id=command.device_id)
            info = self._client.publish(topic, json.dumps(command.payload), qos=1)
            ok = info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)
            metrics.COMMANDS.labels("queued" if ok else "failed").inc()
            if not ok:
                log.warning("command to %s not queued: %s", command.device_id, info.rc)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
