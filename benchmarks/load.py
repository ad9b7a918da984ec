"""A lean QoS 1 load generator: MQTT 3.1.1 PUBLISH packets written straight to a socket.

The devices of a deployment are not on the NOC's machine; on this 2-core machine a load
generator competes with the system it measures. paho spends ≈ 150 µs of CPU per QoS 1
publish here (three processes at 5,000 msg/s took 0.8 of a core), so the benchmarks drive
background traffic with this instead: packets encoded with :mod:`flows.mqtt_codec`, sent in
one ``sendall`` per 10 ms slice, PUBACKs counted by a reader thread. At most ``window``
messages are left unacknowledged, so a broker that cannot keep up shows as a lower rate,
never as a local queue.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from flows.mqtt_codec import (
    DISCONNECT_PACKET,
    PUBACK,
    ProtocolError,
    encode_connect,
    encode_publish,
)
from flows.mqtt_consumer import open_session

Message = tuple[str, bytes]
"""(topic, payload)."""


class LeanPublisher:
    """One clean MQTT session that publishes at QoS 1. Not thread-safe: one sending thread."""

    def __init__(self, host: str, port: int, client_id: str, window: int = 2000) -> None:
        if not 0 < window < 65535:
            raise ValueError("window must be between 1 and 65534")
        self._window = window
        connect = encode_connect(client_id, clean_session=True, keepalive_s=0)
        self._sock, self._reader, _session, _rest = open_session(host, port, connect)
        self._sock.settimeout(None)
        self._mid = 0
        self._lock = threading.Lock()
        self.sent = 0
        self.acked = 0
        self._thread = threading.Thread(target=self._read, name="lean-publisher", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while data := self._sock.recv(65536):
                acks = sum(1 for p in self._reader.feed(data) if p.type == PUBACK)
                if acks:
                    with self._lock:
                        self.acked += acks
        except (OSError, ProtocolError):
            return

    @property
    def unacked(self) -> int:
        with self._lock:
            return self.sent - self.acked

    def publish_many(self, messages: list[Message]) -> None:
        """Send the messages in one write. The caller keeps :attr:`unacked` under the window."""
        packets = []
        for topic, payload in messages:
            self._mid = self._mid % 65535 + 1
            packets.append(encode_publish(topic, payload, qos=1, mid=self._mid))
        self._sock.sendall(b"".join(packets))
        with self._lock:
            self.sent += len(messages)

    def run(
        self,
        rate: float,
        make: Callable[[int, str], Message],
        stop: threading.Event | Callable[[], bool],
        slice_s: float = 0.01,
    ) -> int:
        """Publish ``make(n, now_iso)`` at ``rate`` msg/s until ``stop``; returns how many were
        sent. Behind schedule (window full) it sends what the window allows, never a burst
        beyond it."""
        stopped = stop.is_set if isinstance(stop, threading.Event) else stop
        n = 0
        started = time.perf_counter()
        while not stopped():
            due = int((time.perf_counter() - started) * rate)
            room = self._window - self.unacked
            count = min(due - n, room)
            if count > 0:
                now = datetime.now(UTC).isoformat()
                self.publish_many([make(n + i, now) for i in range(count)])
                n += count
            time.sleep(slice_s)
        return n

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(DISCONNECT_PACKET)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)
