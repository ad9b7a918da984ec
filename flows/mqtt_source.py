"""Bytewax source for MQTT: persistent QoS 1 sessions, acknowledged only after commit.

Each partition is one :class:`~flows.mqtt_consumer.MqttConsumer` with a fixed client id and
``clean_session=False``, so the broker keeps its subscriptions and queues messages while the
flow is down. A message is acknowledged only when the storage sink reports that the transaction
holding it has committed (see :mod:`flows.acks`); anything unacknowledged is redelivered after
a crash or a reconnect. The consumer reconnects with backoff on its own, so the flow keeps
running while the broker is down.

Priority topics (``NOC_MQTT_PRIORITY_TOPICS``, default ``alert/#``) also have a partition of
their own, consumed by the priority lane: a dataflow in a process of its own
(:mod:`flows.priority`), so the broker never holds a panic behind the bulk partition's
unacknowledged telemetry (its in-flight window) and no panic waits for the bulk worker. The
bulk copies of priority messages are paired with the lane's copies (see :mod:`flows.handoff`).
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows import metrics
from flows.acks import AckLedger, AckToken, commit, ledger_for
from flows.envelope import Inbound
from flows.handoff import Handoff, handoff_for, message_key
from flows.mqtt_codec import Publish
from flows.mqtt_consumer import ConsumerConfig, MqttConsumer
from noc.topics import filter_matcher

log = logging.getLogger(__name__)

#: Everything is consumed, so a topic outside the contract is dead-lettered rather than unseen;
#: the flow's own outbound command topic is recognised and skipped.
TOPIC_FILTERS = ("#",)

_MICROSECOND = timedelta(microseconds=1)

PRIORITY_PART = "priority"
"""The partition (client id ``PREFIX-priority``) that consumes only the priority topics."""


class LaneReporter(Protocol):
    """What the priority partition tells the bulk flow's process (:mod:`flows.priority_lane`).
    Called on the consumer's reader thread; must not block for long."""

    def connected(self, up: bool) -> None:
        """The priority session is (up) or is no longer (not up) connected."""

    def received(self, keys: list[bytes]) -> None:
        """Messages with these :func:`~flows.handoff.message_key` keys arrived."""


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
    batch_max: int = 250
    idle_wait: timedelta = timedelta(milliseconds=20)
    share_group: str = "noc"
    outbound_template: str = "device/{device_id}/commands"
    priority_topics: tuple[str, ...] = ("alert/#",)
    priority_only: bool = False
    """This source is the priority lane's: it consumes the priority partition alone. Otherwise
    it consumes the bulk partitions (the lane, a process of its own, consumes the other)."""

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError("partitions must be >= 1")
        if self.priority_only and not self.priority_topics:
            raise ValueError("a priority-only source needs priority topics")
        if not self.client_id_prefix:
            raise ValueError("client_id_prefix must not be empty")

    def topic_filters(self, part: str = "0") -> list[str]:
        """Subscriptions of a partition: the priority partition takes the priority topics
        alone; bulk partitions take everything, shared among them when there are several."""
        if part == PRIORITY_PART:
            return list(self.priority_topics)
        if self.partitions == 1:
            return list(TOPIC_FILTERS)
        return [f"$share/{self.share_group}/{t}" for t in TOPIC_FILTERS]


class MqttSource(FixedPartitionedSource[Inbound, None]):
    """One partition per MQTT client id: ``PREFIX-0`` .. ``PREFIX-N-1`` for everything, or
    (``priority_only``) ``PREFIX-priority`` for the priority topics, whose partition tells
    ``reporter`` what it receives (see :mod:`flows.handoff`).
    """

    def __init__(
        self,
        config: MqttSourceConfig,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        reporter: LaneReporter | None = None,
    ) -> None:
        self._config = config
        self._now = now
        self._reporter = reporter

    def list_parts(self) -> list[str]:
        if self._config.priority_only:
            return [PRIORITY_PART]
        return [str(i) for i in range(self._config.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _MqttPartition:
        del step_id, resume_state  # the broker session is the resume state
        return _MqttPartition(self._config, for_part, self._now, self._reporter)


class _MqttPartition(StatefulSourcePartition[Inbound, None]):
    def __init__(
        self,
        config: MqttSourceConfig,
        part: str,
        now: Callable[[], datetime],
        reporter: LaneReporter | None,
    ) -> None:
        self._config = config
        self._now = now
        self._part = part
        self._client_id = f"{config.client_id_prefix}-{part}"
        self._ledger: AckLedger = ledger_for(self._client_id)
        self._queue: deque[Inbound] = deque()
        self._last_at = datetime.min.replace(tzinfo=UTC)
        self._is_priority_part = part == PRIORITY_PART
        self._reporter = reporter if self._is_priority_part else None
        self._handoff: Handoff[Inbound] = handoff_for(config.client_id_prefix)
        self._priority = None if self._is_priority_part else filter_matcher(config.priority_topics)
        self._outbound = outbound_matcher(config.outbound_template)
        self._received = metrics.MQTT_RECEIVED.labels(part)  # per message: bound once
        self._acked = metrics.MQTT_ACKED.labels(part)
        self._consumer = MqttConsumer(
            ConsumerConfig(
                host=config.host,
                port=config.port,
                client_id=self._client_id,
                filters=tuple(config.topic_filters(part)),
                keepalive_s=config.keepalive_s,
                username=config.username,
                password=config.password,
            ),
            on_messages=self._on_messages,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
        ).start()

    # consumer thread ------------------------------------------------------------------
    def _on_connect(self, session_present: bool) -> None:
        self._ledger.new_connection()
        if self._reporter is not None:
            self._reporter.connected(True)
        metrics.MQTT_CONNECTED.labels(self._part).set(1)
        metrics.MQTT_CONNECTS.labels(self._part).inc()
        log.info(
            "mqtt %s: connected to %s:%d (session present: %s)",
            self._client_id,
            self._config.host,
            self._config.port,
            session_present,
        )

    def _on_disconnect(self, reason: str) -> None:
        if self._reporter is not None:
            self._reporter.connected(False)
        self._ledger.new_connection()
        metrics.MQTT_CONNECTED.labels(self._part).set(0)
        log.warning("mqtt %s: disconnected (%s); reconnecting", self._client_id, reason)

    def _on_messages(self, messages: list[Publish]) -> None:
        now = self._now()
        mids = [m.mid for m in messages if m.mid is not None]
        tokens = iter(self._ledger.received_many(mids))
        done: list[AckToken | None] = []  # nothing (more) to store: acknowledge at once
        handoff = self._handoff
        keys: list[bytes] = []  # priority partition: what the bulk flow pairs with
        for msg in messages:
            token = next(tokens) if msg.mid is not None else None
            topic = msg.topic
            if self._outbound.match(topic):  # our own command echoed back
                done.append(token)
                metrics.MQTT_OUTBOUND_SKIPPED.labels(self._part).inc()
                continue
            # Receipt times are strictly increasing per partition: they are part of a dead
            # letter's identity, so two identical bad messages stay two rows.
            at = now if now > self._last_at else self._last_at + _MICROSECOND
            self._last_at = at
            inbound = Inbound(topic, msg.payload, at, token)
            if self._is_priority_part:
                keys.append(message_key(topic, msg.payload))
            elif self._priority is not None and self._priority.match(topic):
                verdict = handoff.bulk_copy(topic, msg.payload, inbound)
                if verdict == "paired":  # the priority lane has this message: it stores it
                    done.append(token)
                    metrics.MQTT_HANDED_OFF.inc()
                    inbound = inbound.stored_elsewhere()
                elif verdict == "held":
                    continue
            self._queue.append(inbound)
        if keys and self._reporter is not None:
            self._reporter.received(keys)
        commit(done)
        self._received.inc(len(messages))

    # Bytewax worker thread -----------------------------------------------------------
    def next_batch(self) -> list[Inbound]:
        """Acknowledge what has committed, then hand over at most ``batch_max`` of what
        arrived. Never blocks."""
        queue = self._queue
        if not self._is_priority_part:
            queue.extend(self._handoff.expired())  # bulk copies the priority lane never got
            paired = self._handoff.take_paired()  # held bulk copies the lane has now
            if paired:
                commit(p.token for p in paired)
                metrics.MQTT_HANDED_OFF.inc(len(paired))
                queue.extend(p.stored_elsewhere() for p in paired)
        self._send_acks()
        metrics.MQTT_IN_FLIGHT.labels(self._part).set(self._ledger.in_flight)
        batch: list[Inbound] = []
        while queue and len(batch) < self._config.batch_max:
            batch.append(queue.popleft())
        return batch

    def _send_acks(self) -> None:
        generation, mids = self._ledger.take_ackable()
        if mids and self._consumer.ack(mids, lambda: self._ledger.generation == generation):
            self._acked.inc(len(mids))

    def next_awake(self) -> datetime | None:
        if self._queue:
            return None
        return datetime.now(UTC) + self._config.idle_wait

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self._send_acks()
        self._consumer.close()
