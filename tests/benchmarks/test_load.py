"""The benchmarks' lean QoS 1 load generator against a real Mosquitto (a private one)."""

from __future__ import annotations

import signal
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.load import LeanPublisher
from tests.integration.harness import PrivateBroker, wait_until

pytestmark = pytest.mark.integration


def subscriber(port: int, received: list[tuple[str, bytes]]) -> mqtt.Client:
    ready = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="lean-sub")
    client.on_message = lambda _c, _u, m: received.append((m.topic, m.payload))
    client.on_subscribe = lambda *_: ready.set()
    client.connect("127.0.0.1", port)
    client.subscribe("load/#", qos=1)
    client.loop_start()
    assert ready.wait(10)
    return client


def test_every_message_arrives_once_and_is_acknowledged(private_broker: PrivateBroker) -> None:
    received: list[tuple[str, bytes]] = []
    sub = subscriber(private_broker.port, received)
    publisher = LeanPublisher("127.0.0.1", private_broker.port, "lean-pub", window=50)
    try:
        sent = publisher.run(
            2000.0,
            lambda n, now: (f"load/{n % 7}", f"{n} {now}".encode()),
            lambda: publisher.sent >= 1500,
        )
        wait_until(lambda: publisher.acked == sent, 20, "every PUBACK")
        wait_until(lambda: len(received) >= sent, 20, "every message at the subscriber")
    finally:
        publisher.close()
        sub.disconnect()
        sub.loop_stop()
    assert sent >= 1500
    numbers = sorted(int(payload.split()[0]) for _topic, payload in received)
    assert numbers == list(range(sent))
    assert all(topic == f"load/{int(p.split()[0]) % 7}" for topic, p in received)


def test_the_window_bounds_unacknowledged_messages(private_broker: PrivateBroker) -> None:
    """A broker that stops answering (SIGSTOP) leaves at most ``window`` messages unacked:
    the generator slows down instead of queueing locally."""
    publisher = LeanPublisher("127.0.0.1", private_broker.port, "lean-pub-window", window=100)
    assert private_broker.proc is not None
    try:
        stop = threading.Event()
        worker = threading.Thread(
            target=publisher.run,
            args=(5000.0, lambda n, _now: ("load/x", b"%d" % n), stop),
            daemon=True,
        )
        worker.start()
        wait_until(lambda: publisher.acked > 200, 10, "traffic")
        private_broker.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.5)
        assert publisher.unacked <= 100
        stop.set()
        worker.join(5)
    finally:
        private_broker.proc.send_signal(signal.SIGCONT)
        publisher.close()


def test_a_bad_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        LeanPublisher("127.0.0.1", 1, "x", window=0)
