"""Publishing the device command an alert transition returns (after its commit)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from noc.settings import MqttSettings
from notifier.errors import CommandPublishError
from notifier.mqtt_commands import publish_command
from operators.records import DeviceCommand

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """Whether the broker acknowledged the command (QoS 1); ``error`` says why not."""

    device_id: str
    topic: str
    published: bool
    error: str | None = None


def send(mqtt: MqttSettings, command: DeviceCommand) -> CommandOutcome:
    """Publish and wait for the PUBACK. Blocking: call from a worker thread. Never raises
    for a broker problem (the alert change is already committed); reports it instead."""
    topic = mqtt.commands_topic.replace("{device_id}", command.device_id)
    try:
        topic = publish_command(
            mqtt.host,
            mqtt.port,
            mqtt.commands_topic,
            command,
            username=mqtt.username,
            password=mqtt.password,
            timeout_s=5.0,
        )
    except CommandPublishError as exc:
        log.warning("command for %s not published: %s", command.device_id, exc)
        return CommandOutcome(command.device_id, topic, False, str(exc))
    return CommandOutcome(command.device_id, topic, True)
