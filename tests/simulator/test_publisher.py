"""The publisher: token bucket (fake clock), and real brokers (shared, and a private one that
is restarted in the middle of a run)."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulator.errors import PublishError, ScenarioError
from simulator.publisher import PublisherConfig, TokenBucket, publish
from simulator.scenario import ScenarioConfig, SimMessage
from tests.integration.harness import PrivateBroker, free_port, wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        bucket.acquire()
    assert clock.now == 100.0  # the burst is free
    for _ in range(20):
        bucket.acquire()
    assert clock.now == pytest.approx(102.0)  # then 10 per second


def test_token_bucket_refills_while_idle_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=10, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        bucket.acquire()
    clock.now += 60  # a long pause banks only `burst` tokens
    for _ in range(10):
        bucket.acquire()
    assert not clock.slept
    bucket.acquire()
    assert sum(clock.slept) == pytest.approx(0.01)


@pytest.mark.parametrize(
    "kwargs",
    [{"qos": 3}, {"rate": 0.0}, {"rate": float("inf")}, {"port": 0}, {"max_inflight": 0}],
)
def test_bad_publisher_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ScenarioError):
        PublisherConfig(**kwargs)  # type: ignore[arg-type]


class Collector:
    """A subscriber that records (topic, payload) of everything on ``#``."""

    def __init__(self, port: int, client_id: str | None = None, clean: bool = True) -> None:
        self.got: Counter[tuple[str, bytes]] = Counter()
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"sim-test-{uuid.uuid4().hex[:8]}",
            clean_session=clean,
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got[(msg.topic, bytes(msg.payload))] += 1

    def has_all(self, expected: list[SimMessage]) -> bool:
        with self.lock:
            return all((m.topic, m.payload) in self.got for m in expected)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _traffic(n: int, seed: int = 3) -> list[SimMessage]:
    sc = ScenarioConfig(seed=seed, malformed=0.05).build()
    return list(sc.messages(datetime.now(UTC), 1000, count=n))


@pytest.mark.integration
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publishes_everything_and_counts_it(private_broker: PrivateBroker, qos: int) -> None:
    msgs = _traffic(1500)
    sub = Collector(private_broker.port)
    try:
        cfg = PublisherConfig(port=private_broker.port, qos=qos, rate=None, max_inflight=100)
        result = publish(msgs, cfg)
        assert result.sent == len(msgs)
        assert result.valid == sum(m.valid for m in msgs)
        assert result.invalid == len(msgs) - result.valid
        assert result.by_kind == Counter(m.kind for m in msgs)
        assert result.reconnects == 0
        wait_until(lambda: sub.has_all(msgs), 20, "every message at the subscriber")
        assert "published 1500 messages" in result.summary()
    finally:
        sub.close()


@pytest.mark.integration
def test_rate_is_limited(mqtt_broker: tuple[str, int]) -> None:
    msgs = _traffic(300)
    result = publish(msgs, PublisherConfig(host=mqtt_broker[0], port=mqtt_broker[1], rate=500))
    # 300 messages at 500/s with a 0.1 s burst (50 messages): at least 0.5 s.
    assert result.elapsed_s >= 0.45
    assert result.rate <= 700


@pytest.mark.integration
def test_unreachable_broker_is_one_line() -> None:
    port = free_port()
    with pytest.raises(PublishError, match=f"cannot connect to MQTT broker 127.0.0.1:{port}"):
        publish(_traffic(5), PublisherConfig(port=port))


@pytest.mark.integration
@pytest.mark.fault
@pytest.mark.parametrize("qos", [0, 1])
def test_broker_restart_mid_run_loses_nothing(private_broker: PrivateBroker, qos: int) -> None:
    """The broker goes away for ~1.5 s in the middle of a run and comes back (with its
    persistent state): every message still reaches a persistent-session subscriber."""
    msgs = _traffic(3000, seed=11)
    sub = Collector(private_broker.port, client_id=f"sim-fault-{uuid.uuid4().hex[:6]}", clean=False)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            cfg = PublisherConfig(port=private_broker.port, qos=qos, rate=1000)
            outcome["result"] = publish(msgs, cfg)
        except Exception as exc:  # reported below
            outcome["error"] = exc

    publisher = threading.Thread(target=run)
    try:
        publisher.start()
        time.sleep(1.0)
        private_broker.restart(down_for=1.5)
        publisher.join(60)
        assert not publisher.is_alive()
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        assert result.sent == len(msgs)  # type: ignore[attr-defined]
        assert result.reconnects >= 1  # type: ignore[attr-defined]
        if qos == 1:  # QoS 0 only promises "written to the socket" before the restart
            wait_until(lambda: sub.has_all(msgs), 30, "every message at the subscriber")
    finally:
        sub.close()
