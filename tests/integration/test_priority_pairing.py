"""The bulk partition's side of the priority lane, against a private Mosquitto.

The bulk MQTT partition consumes everything; for priority-topic messages it consults the
handoff that the priority lane's reports feed (here the test reports, as the lane's pipe
reader would). Each case publishes one panic and looks at what the partition hands to the
steps and what it acknowledges.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from flows.acks import ledger_for
from flows.envelope import Inbound
from flows.handoff import Handoff, handoff_for, message_key
from flows.mqtt_source import MqttSource, MqttSourceConfig, _MqttPartition
from tests.integration.harness import PrivateBroker, Publisher, wait_until

pytestmark = pytest.mark.integration


class Bulk:
    """The bulk partition of a source with its own client id, and its handoff."""

    def __init__(self, port: int) -> None:
        self.prefix = f"noc-pair-{uuid.uuid4().hex[:8]}"
        config = MqttSourceConfig("127.0.0.1", port, self.prefix, priority_topics=("alert/#",))
        self.part: _MqttPartition = MqttSource(config).build_part("mqtt", "0", None)
        self.handoff: Handoff[Inbound] = handoff_for(self.prefix)
        self.ledger = ledger_for(f"{self.prefix}-0")
        self.seen: list[Inbound] = []

    def connected(self) -> bool:
        return self.ledger.generation > 0

    def poll_until(self, n: int) -> list[Inbound]:
        def enough() -> bool:
            self.seen.extend(self.part.next_batch())
            return len(self.seen) >= n

        wait_until(enough, 15, f"{n} message(s) from the bulk partition", step=0.02)
        return self.seen

    def panic(
        self, port: int, n: int, lane_up: bool, lane_first: bool = False
    ) -> tuple[str, bytes]:
        """Publish panic ``n`` with the lane reported up or down (and as having it already)."""
        self.handoff.priority_connected = lane_up
        topic, payload = panic(n)
        if lane_first:
            self.handoff.priority_copies([message_key(topic, payload)])
        publish(port, (topic, payload))
        return topic, payload

    def close(self) -> None:
        self.part.close()


@pytest.fixture
def bulk(private_broker: PrivateBroker) -> Iterator[Bulk]:
    b = Bulk(private_broker.port)
    wait_until(b.connected, 15, "the bulk partition to connect")
    try:
        yield b
    finally:
        b.close()


def panic(n: int) -> tuple[str, bytes]:
    body = {"severity": "critical", "message": f"p{n}", "timestamp": "2026-12-02T03:00:00+00:00"}
    return f"alert/panic/pb-{n}", json.dumps(body).encode()


def publish(port: int, *messages: tuple[str, bytes]) -> None:
    publisher = Publisher(port)
    publisher.publish(messages)
    publisher.wait_all(10)
    publisher.close()


def test_a_copy_the_lane_has_passes_on_stored_elsewhere_and_is_acknowledged(
    private_broker: PrivateBroker, bulk: Bulk
) -> None:
    topic, _ = bulk.panic(private_broker.port, 1, lane_up=True, lane_first=True)
    publish(private_broker.port, ("device/tm-1/telemetry", b'{"battery": 80}'))
    seen = bulk.poll_until(2)
    by_topic = {m.topic: m for m in seen}
    assert by_topic[topic].elsewhere and by_topic[topic].token is None
    telemetry = by_topic["device/tm-1/telemetry"]
    assert not telemetry.elsewhere and telemetry.token is not None
    # The panic's PUBACK went out at once; only the telemetry waits for its commit.
    bulk.part.next_batch()
    assert bulk.ledger.in_flight == 1


def test_a_copy_that_comes_first_is_held_until_the_lane_has_it(
    private_broker: PrivateBroker, bulk: Bulk
) -> None:
    topic, payload = bulk.panic(private_broker.port, 2, lane_up=True)
    wait_until(lambda: bulk.handoff.held == 1, 15, "the bulk copy to be held")
    assert bulk.part.next_batch() == []
    assert bulk.ledger.in_flight == 1
    assert bulk.handoff.priority_copies([message_key(topic, payload)]) == 1
    (copy,) = bulk.poll_until(1)
    assert copy.topic == topic and copy.elsewhere and copy.token is None
    bulk.part.next_batch()
    assert bulk.ledger.in_flight == 0  # acknowledged: the lane stores it


def test_without_the_lane_the_bulk_partition_stores_priority_messages(
    private_broker: PrivateBroker, bulk: Bulk
) -> None:
    topic, _ = bulk.panic(private_broker.port, 3, lane_up=False)
    (copy,) = bulk.poll_until(1)
    assert copy.topic == topic and not copy.elsewhere and copy.token is not None
    assert bulk.ledger.in_flight == 1  # acknowledged only after its own commit
