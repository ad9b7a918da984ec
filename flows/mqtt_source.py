"""Bytewax source for MQTT (paho-mqtt 2): persistent QoS 1 sessions, acks after commit.

Each partition is one MQTT client with a fixed client id and ``clean_session=False``, so the
broker keeps its subscriptions and queues messages while the flow is down. With
``manual_ack=True`` a message is acknowledged only when the storage sink reports that its batch
has committed (see :mod:`flows.acks`); anything unacknowledged is redelivered after a crash or a
reconnect. The paho network thread reconnects with backoff on its own, so the flow keeps running
while the broker is down.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from paho.mqtt.enums import CallbackAPIVersion

from flows import metrics
from flows.acks import AckLedger, ledger_for
from flows.envelope import Inbound

log = logging.getLogger(__name__)

#: Everything is consumed, so a topic outside the contract is dead-lettered rather than unseen;
#: the flow's own outbound command topic is recognised and skipped.
TOPIC_FILTERS = ("#",)


def outbound_matcher(template: str) -> re.Pattern[str]:
    """A regex matching topics made from an outbound template like ``device/{device_id}/x``."""
    pattern = re.escape(template).replace(re.escape("{device_id}"), "[^/]+")
    return re.compile(f"^{pattern}$")


@dataclass(frozen=True)
class MqttSourceConfig:
    """Where and how to consume. Validated eagerly."""

    host: str
    port: int
    client_id_prefix: str
    partitions: int = 1
    keepalive_s: int = 30
    username: str = ""
    password: str = ""
    batch_max: int = 2000
    idle_wait: timedelta = timedelta(milliseconds=20)
    share_group: str = "noc"
    outbound_template: str = "device/{device_id}/commands"

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError("partitions must be >= 1")
        if not self.client_id_prefix:
            raise ValueError("client_id_prefix must not be empty")

    def topic_filters(self) -> list[str]:
        """Subscriptions: shared among partitions when there is more than one."""
        if self.partitions == 1:
            return list(TOPIC_FILTERS)
        return [f"$share/{self.share_group}/{t}" for t in TOPIC_FILTERS]


class MqttSource(FixedPartitionedSource[Inbound, None]):
    """One partition per MQTT client id (``PREFIX-0`` .. ``PREFIX-N-1``)."""

    def __init__(
        self, config: MqttSourceConfig, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._config = config
        self._now = now

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self._config.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _MqttPartition:
        del step_id, resume_state  # the broker session is the resume state
        return _MqttPartition(self._config, for_part, self._now)


class _MqttPartition(StatefulSourcePartition[Inbound, None]):
    def __init__(self, config: MqttSourceConfig, part: str, now: Callable[[], datetime]) -> None:
        self._config = config
        self._now = now
        self._part = part
        self._client_id = f"{config.client_id_prefix}-{part}"
        self._ledger: AckLedger = ledger_for(self._client_id)
        self._queue: deque[Inbound] = deque()
        self._connected = threading.Event()
        self._outbound = outbound_matcher(config.outbound_template)
        self._received = metrics.MQTT_RECEIVED.labels(part)  # per message: bound once
        self._acked = metrics.MQTT_ACKED.labels(part)
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        if config.username:
            client.username_pw_set(config.username, config.password or None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client = client
        client.connect_async(config.host, config.port, keepalive=config.keepalive_s)
        client.loop_start()

    # paho network thread -------------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        del userdata, properties
        if reason.is_failure:
            log.warning("mqtt %s: connection refused: %s", self._client_id, reason)
            return
        self._ledger.new_connection()
        client.subscribe([(t, 1) for t in self._config.topic_filters()])
        self._connected.set()
        metrics.MQTT_CONNECTED.labels(self._part).set(1)
        metrics.MQTT_CONNECTS.labels(self._part).inc()
        log.info(
            "mqtt %s: connected to %s:%d (session present: %s)",
            self._client_id,
            self._config.host,
            self._config.port,
            getattr(flags, "session_present", "?"),
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        del client, userdata, flags, properties
        self._connected.clear()
        self._ledger.new_connection()
        metrics.MQTT_CONNECTED.labels(self._part).set(0)
        log.warning("mqtt %s: disconnected (%s); reconnecting", self._client_id, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        del client, userdata
        token = self._ledger.received(msg.mid) if msg.qos > 0 else None
        if self._outbound.match(msg.topic):
            if token is not None:  # our own command echoed back: nothing to store
                self._ledger.committed([token])
            metrics.MQTT_OUTBOUND_SKIPPED.labels(self._part).inc()
            return
        self._queue.append(Inbound(msg.topic, bytes(msg.payload), self._now(), token))
        self._received.inc()

    # Bytewax worker thread -----------------------------------------------------------
    def next_batch(self) -> list[Inbound]:
        """Acknowledge what has committed, then hand over what arrived. Never blocks."""
        ackable = self._ledger.take_ackable()
        for mid in ackable:
            self._client.ack(mid, 1)
        if ackable:
            self._acked.inc(len(ackable))
        metrics.MQTT_IN_FLIGHT.labels(self._part).set(self._ledger.in_flight)
        batch: list[Inbound] = []
        queue = self._queue
        while queue and len(batch) < self._config.batch_max:
            batch.append(queue.popleft())
        return batch

    def next_awake(self) -> datetime | None:
        if self._queue:
            return None
        return datetime.now(UTC) + self._config.idle_wait

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        for mid in self._ledger.take_ackable():
            self._client.ack(mid, 1)
        self._client.disconnect()
        self._client.loop_stop()
