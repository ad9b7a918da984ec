"""MqttConsumer against a private Mosquitto (the project's broker limits), paho publishing.

Covers what the ingest source relies on: QoS 1 messages in arrival order (chunked reads of a
large one included), PUBACKs only when ``ack`` is told to send them, redelivery of everything
unacknowledged to the next connection of the session, a session that outlives the consumer
and a broker restart, and reconnection without help.
"""

from __future__ import annotations

import random
import signal
import threading
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from flows.mqtt_codec import Publish
from flows.mqtt_consumer import ConsumerConfig, MqttConsumer
from tests.integration.harness import PrivateBroker, drop_mqtt_session, wait_until

pytestmark = pytest.mark.integration

FILTERS = ("data/#", "probe/#")
BIG = 300 * 1024  # larger than one 256 KiB read of the consumer
WAIT_S = 15.0


def payload(i: int, size: int | None = None) -> bytes:
    """A payload that names its index, with deterministic filler of varied size."""
    if size is None:
        size = BIG if i == 777 else (i * 37) % 1500
    return f"{i:05d}|".encode() + random.Random(i).randbytes(size)


class Recorder:
    """The consumer's callbacks: data messages, connection events and probe count, in order.

    Probes are always acknowledged at once (they only show that the subscription is active);
    data messages only when ``ack_data``.
    """

    def __init__(self, ack_data: bool) -> None:
        self.ack_data = ack_data
        self.consumer: MqttConsumer | None = None
        self.cond = threading.Condition()
        self.messages: list[Publish] = []
        self.events: list[tuple[str, object]] = []
        self.probes = 0

    def on_messages(self, batch: list[Publish]) -> None:
        data = [m for m in batch if m.topic.startswith("data/")]
        acks = [
            m.mid
            for m in batch
            if m.mid is not None and (self.ack_data or not m.topic.startswith("data/"))
        ]
        if acks and self.consumer is not None:
            # False only when the connection just broke: the broker then redelivers.
            self.consumer.ack(acks, lambda: True)
        with self.cond:
            self.messages.extend(data)
            self.probes += len(batch) - len(data)
            self.cond.notify_all()

    def on_connect(self, session_present: bool) -> None:
        with self.cond:
            self.events.append(("connect", session_present))
            self.cond.notify_all()

    def on_disconnect(self, reason: str) -> None:
        with self.cond:
            self.events.append(("disconnect", reason))
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")

    def payloads(self) -> list[bytes]:
        with self.cond:
            return [m.payload for m in self.messages]

    def connects(self) -> list[object]:
        with self.cond:
            return [flag for kind, flag in self.events if kind == "connect"]


class Publisher:
    """A paho QoS 1 publisher with a persistent session; completion tracked per packet id.

    ``publish`` also works while disconnected: paho keeps the message and sends it after
    reconnecting, and :meth:`wait` sees it complete then.
    """

    def __init__(self, port: int, client_id: str) -> None:
        self.cond = threading.Condition()
        self.done: set[int] = set()
        self.connected = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_connect = lambda *_args: self.connected.set()
        self.client.on_disconnect = lambda *_args: self.connected.clear()
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self.connected.wait(WAIT_S):
            raise AssertionError("the publisher could not connect")

    def _on_publish(self, _client: object, _userdata: object, mid: int, *_rest: object) -> None:
        with self.cond:
            self.done.add(mid)
            self.cond.notify_all()

    def publish(self, topic: str, body: bytes) -> int:
        info = self.client.publish(topic, body, qos=1)
        assert info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN), info.rc
        return info.mid

    def publish_all(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish and wait until the broker has acknowledged every message."""
        self.wait([self.publish(topic, body) for topic, body in messages])

    def wait(self, mids: list[int], timeout: float = WAIT_S) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.done.issuperset(mids), timeout):
                raise AssertionError("the broker did not acknowledge every publish")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Bench:
    """A private broker and everything a test connects to it; all closed and dropped after."""

    def __init__(self) -> None:
        self.broker = PrivateBroker().start()
        self.consumers: list[MqttConsumer] = []
        self.publishers: list[Publisher] = []
        self.sessions: set[str] = set()

    def consumer(
        self,
        client_id: str,
        recorder: Recorder,
        backoff: tuple[float, float] = (1.0, 10.0),
        keepalive_s: int = 30,
    ) -> MqttConsumer:
        config = ConsumerConfig(
            host="127.0.0.1",
            port=self.broker.port,
            client_id=client_id,
            filters=FILTERS,
            keepalive_s=keepalive_s,
            min_backoff_s=backoff[0],
            max_backoff_s=backoff[1],
        )
        consumer = MqttConsumer(
            config, recorder.on_messages, recorder.on_connect, recorder.on_disconnect
        )
        recorder.consumer = consumer
        self.consumers.append(consumer)
        self.sessions.add(client_id)
        return consumer.start()

    def publisher(self) -> Publisher:
        client_id = f"test-pub-{uuid.uuid4().hex[:8]}"
        self.sessions.add(client_id)
        publisher = Publisher(self.broker.port, client_id)
        self.publishers.append(publisher)
        return publisher

    def subscribed_publisher(self, recorder: Recorder) -> Publisher:
        """A publisher, once its probes reach ``recorder``: the consumer's SUBSCRIBE has been
        processed."""
        publisher = self.publisher()
        seen = recorder.probes
        for _ in range(int(WAIT_S / 0.1)):
            publisher.publish("probe/x", b"probe")
            with recorder.cond:
                if recorder.cond.wait_for(lambda: recorder.probes > seen, 0.1):
                    return publisher
        raise AssertionError("the consumer's subscription never became active")

    def close(self) -> None:
        for consumer in self.consumers:
            consumer.close()
        for publisher in self.publishers:
            publisher.close()
        if self.broker.proc is not None and self.broker.proc.poll() is None:
            for client_id in sorted(self.sessions):
                drop_mqtt_session(self.broker.port, client_id)
        self.broker.close()


@pytest.fixture
def bench() -> Iterator[Bench]:
    bench = Bench()
    try:
        yield bench
    finally:
        bench.close()


def client_id() -> str:
    return f"test-consumer-{uuid.uuid4().hex[:8]}"


def test_qos1_messages_arrive_in_order_with_topic_payload_qos_and_mid(bench: Bench) -> None:
    count = 2000
    recorder = Recorder(ack_data=True)
    bench.consumer(client_id(), recorder)
    publisher = bench.subscribed_publisher(recorder)
    sent = [(f"data/{i % 7}/telemetry", payload(i)) for i in range(count)]
    assert max(len(body) for _, body in sent) > BIG

    publisher.publish_all(sent)
    recorder.wait_for(lambda: len(recorder.messages) >= count, f"{count} messages")

    got = recorder.messages
    assert [(m.topic, m.payload) for m in got] == sent
    assert {(m.qos, m.dup, m.retain) for m in got} == {(1, False, False)}
    mids = [m.mid for m in got]
    assert all(mid is not None and 1 <= mid <= 65535 for mid in mids)
    assert len(set(mids)) == count  # all acknowledged on the way, none reused by then
    assert recorder.connects() == [False]  # a new session, no reconnect


@pytest.mark.parametrize(
    ("valid", "sent", "redelivered_from"),
    [
        pytest.param(True, True, 4, id="acked-4-not-redelivered"),
        pytest.param(False, False, 0, id="invalid-sends-nothing"),
    ],
)
def test_unacknowledged_messages_are_redelivered_to_the_next_connection(
    bench: Bench, valid: bool, sent: bool, redelivered_from: int
) -> None:
    cid = client_id()
    first = Recorder(ack_data=False)
    consumer = bench.consumer(cid, first)
    publisher = bench.subscribed_publisher(first)
    bodies = [payload(i, 100) for i in range(10)]
    publisher.publish_all([(f"data/{i}", body) for i, body in enumerate(bodies)])
    first.wait_for(lambda: len(first.messages) == 10, "10 messages")
    mids = [m.mid for m in first.messages if m.mid is not None]
    calls: list[bool] = []

    def check() -> bool:
        calls.append(valid)
        return valid

    assert consumer.ack(mids[:4], check) is sent
    assert calls == [valid]
    consumer.close()

    def never() -> bool:
        raise AssertionError("valid() must not be asked without a connection")

    assert consumer.ack(mids[4:], never) is False

    second = Recorder(ack_data=True)
    bench.consumer(cid, second)
    second.wait_for(lambda: second.events != [], "the second connection")
    assert second.connects() == [True]  # the broker kept the session
    sentinel = payload(99, 10)
    publisher.publish_all([("data/sentinel", sentinel)])
    second.wait_for(lambda: sentinel in second.payloads(), "the sentinel")
    # Redeliveries come before anything newer: once the sentinel is in, nothing else is due.
    assert second.payloads() == [*bodies[redelivered_from:], sentinel]
    assert all(m.dup for m in second.messages[:-1])
    assert not second.messages[-1].dup


@pytest.mark.fault
def test_consumer_reconnects_after_a_broker_restart_and_gets_what_was_published_meanwhile(
    bench: Bench,
) -> None:
    recorder = Recorder(ack_data=True)
    bench.consumer(client_id(), recorder, backoff=(0.05, 0.2))
    publisher = bench.subscribed_publisher(recorder)
    before = [(f"data/before/{i}", payload(i, 200)) for i in range(20)]
    publisher.publish_all(before)
    recorder.wait_for(lambda: len(recorder.messages) >= 20, "messages before the restart")

    bench.broker.stop()
    recorder.wait_for(lambda: len(recorder.events) == 2, "the consumer to notice")
    wait_until(lambda: not publisher.connected.is_set(), WAIT_S, "the publisher to notice")
    down = [(f"data/down/{i}", payload(100 + i, 200)) for i in range(20)]
    down_mids = [publisher.publish(topic, body) for topic, body in down]  # kept by paho
    bench.broker.start()
    publisher.wait(down_mids)  # sent once paho reconnected
    after = [(f"data/after/{i}", payload(200 + i, 200)) for i in range(20)]
    publisher.publish_all(after)

    expected = [body for _, body in before + down + after]
    recorder.wait_for(
        lambda: set(expected) <= set(recorder.payloads()), "every message after the restart"
    )
    kinds = [kind for kind, _ in recorder.events]
    assert kinds == ["connect", "disconnect", "connect"]
    assert recorder.connects() == [False, True]  # the broker restored the session
    first_seen: list[bytes] = []
    for m in recorder.messages:
        if m.payload in first_seen:
            # At least once: a message acknowledged just before the broker went down may come
            # again, marked as a redelivery.
            assert m.dup and m.topic.startswith("data/before/"), m
        else:
            first_seen.append(m.payload)
    assert first_seen == expected


def test_messages_published_while_the_consumer_is_offline_are_delivered_when_it_returns(
    bench: Bench,
) -> None:
    cid = client_id()
    first = Recorder(ack_data=True)
    consumer = bench.consumer(cid, first)
    publisher = bench.subscribed_publisher(first)
    consumer.close()
    assert first.connects() == [False]

    sent = [(f"data/offline/{i}", payload(i)) for i in range(300)]
    publisher.publish_all(sent)
    assert first.messages == []

    second = Recorder(ack_data=True)
    bench.consumer(cid, second)
    second.wait_for(lambda: len(second.messages) >= len(sent), "the queued messages")
    assert second.connects() == [True]
    assert [(m.topic, m.payload) for m in second.messages] == sent
    assert not any(m.dup for m in second.messages)  # queued, never sent before


def test_keepalive_keeps_an_idle_connection_open(bench: Bench) -> None:
    """Mosquitto drops a client silent for 1.5 x keepalive (whole seconds): the consumer must
    ping. (Keepalive 2 s, not 1 s: with 1 s the broker's rounding leaves too little margin.)"""
    recorder = Recorder(ack_data=True)
    bench.consumer(client_id(), recorder, keepalive_s=2)
    publisher = bench.subscribed_publisher(recorder)
    with recorder.cond:
        assert not recorder.cond.wait_for(lambda: len(recorder.events) > 1, 5.0), recorder.events
    publisher.publish_all([("data/idle", b"still there")])
    recorder.wait_for(lambda: recorder.payloads() == [b"still there"], "a message after idling")


@pytest.mark.fault
def test_a_broker_that_stops_answering_is_dropped_and_reconnected(bench: Bench) -> None:
    recorder = Recorder(ack_data=True)
    bench.consumer(client_id(), recorder, backoff=(0.05, 0.2), keepalive_s=2)
    publisher = bench.subscribed_publisher(recorder)
    assert bench.broker.proc is not None
    bench.broker.proc.send_signal(signal.SIGSTOP)  # the socket stays open, nothing answers
    try:
        recorder.wait_for(lambda: len(recorder.events) == 2, "the consumer to give up", 8.0)
    finally:
        bench.broker.proc.send_signal(signal.SIGCONT)
    assert "1.5 x keepalive" in str(recorder.events[1][1])
    recorder.wait_for(lambda: len(recorder.events) == 3, "the reconnection")
    assert recorder.connects() == [False, True]
    publisher.publish_all([("data/back", b"back")])
    recorder.wait_for(lambda: b"back" in recorder.payloads(), "a message after reconnecting")


class FailsOnce(Recorder):
    """Raises from the first batch that carries data: a bug in the message handler."""

    def __init__(self) -> None:
        super().__init__(ack_data=True)
        self.failed = False

    def on_messages(self, batch: list[Publish]) -> None:
        if not self.failed and any(m.topic.startswith("data/") for m in batch):
            self.failed = True
            raise RuntimeError("handler bug")
        super().on_messages(batch)


def test_a_failing_handler_drops_the_connection_and_the_messages_come_back(bench: Bench) -> None:
    """The reader never dies silently: it reconnects, and nothing unacknowledged is lost."""
    recorder = FailsOnce()
    bench.consumer(client_id(), recorder, backoff=(0.2, 0.5))
    publisher = bench.subscribed_publisher(recorder)
    sent = [(f"data/fail/{i}", payload(i, 50)) for i in range(20)]
    publisher.publish_all(sent)
    recorder.wait_for(lambda: len(recorder.messages) >= len(sent), "the redelivered messages")
    assert recorder.failed
    kinds = [kind for kind, _ in recorder.events]
    assert kinds[:3] == ["connect", "disconnect", "connect"]
    assert "handler bug" in str(recorder.events[1][1])
    assert [(m.topic, m.payload) for m in recorder.messages][-len(sent) :] == sent
