"""A lean MQTT 3.1.1 subscriber for the ingest source: persistent session, QoS 1, manual acks.

Why not paho here: paho reads one packet per ``select`` and a few bytes per ``recv``, which
cost ≈ 47 µs of CPU per message on this machine (``benchmarks/RESULTS.md``), a quarter of the
flow's budget at 5,000 msg/s, and all of it under the GIL that the worker needs. This client
reads up to 256 KiB per ``recv`` and hands every complete message of it to one callback.
(paho still publishes device commands and drives the simulator and the tests.)

Contract:

- one reader thread connects (``clean_session=False``), subscribes, reads, answers keepalive
  and reconnects with backoff (1 s doubling to 10 s) after any error, for as long as it runs;
- ``on_connect(session_present)`` runs on the reader thread after CONNACK and before any
  message of that connection; ``on_disconnect(reason)`` runs after the socket is gone;
- ``on_messages(list[Publish])`` runs on the reader thread, in arrival order; it must not block;
- ``ack(mids, valid)`` may be called from any thread: it sends PUBACKs on the current
  connection only if ``valid()`` still holds under the send lock (the caller's check that the
  packet ids belong to this connection), so an id is never acknowledged on a later connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flows.mqtt_codec import (
    CONNACK,
    CONNACK_REASONS,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    PUBLISH,
    SUBACK,
    Packet,
    PacketReader,
    ProtocolError,
    Publish,
    encode_connect,
    encode_pubacks,
    encode_subscribe,
    parse_connack,
    parse_publish,
    parse_suback,
)

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024


@dataclass(frozen=True)
class ConsumerConfig:
    """Where to connect and what to subscribe to (all at QoS 1)."""

    host: str
    port: int
    client_id: str
    filters: tuple[str, ...]
    keepalive_s: int = 30
    username: str = ""
    password: str = ""
    min_backoff_s: float = 1.0
    max_backoff_s: float = 10.0


class ConnectionRefused(Exception):
    """The broker answered CONNACK with a non-zero return code."""


def open_session(
    host: str, port: int, connect: bytes
) -> tuple[socket.socket, PacketReader, bool, list[Packet]]:
    """Connect to the broker, send ``connect`` (a CONNECT packet) and wait for CONNACK.

    Returns the socket (blocking, 10 s timeout), its packet reader, whether the broker had a
    session, and the packets that followed CONNACK in the same read. Raises
    :class:`ConnectionRefused`, :class:`ProtocolError` or ``OSError``; the socket is closed
    then."""
    sock = socket.create_connection((host, port), timeout=10)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(connect)
        reader = PacketReader()
        packets: list[Packet] = []
        while not packets:
            data = sock.recv(READ_SIZE)
            if not data:
                raise ConnectionError("broker closed the connection before CONNACK")
            packets = reader.feed(data)
        first = packets[0]
        if first.type != CONNACK:
            raise ProtocolError(f"expected CONNACK, got packet type {first.type}")
        session_present, rc = parse_connack(first.body)
        if rc:
            raise ConnectionRefused(CONNACK_REASONS.get(rc, f"return code {rc}"))
    except BaseException:
        sock.close()
        raise
    return sock, reader, session_present, packets[1:]


class MqttConsumer:
    """One persistent session. Start with :meth:`start`, stop with :meth:`close`."""

    def __init__(
        self,
        config: ConsumerConfig,
        on_messages: Callable[[list[Publish]], None],
        on_connect: Callable[[bool], None],
        on_disconnect: Callable[[str], None],
    ) -> None:
        self._config = config
        self._on_messages = on_messages
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"mqtt-{config.client_id}", daemon=True
        )
        self._last_sent = 0.0

    def start(self) -> MqttConsumer:
        self._thread.start()
        return self

    def ack(self, mids: list[int], valid: Callable[[], bool]) -> bool:
        """Send PUBACKs for ``mids`` if connected and ``valid()``; False if nothing was sent."""
        if not mids:
            return True
        with self._send_lock:
            sock = self._sock
            if sock is None or not valid():
                return False
            try:
                sock.sendall(encode_pubacks(mids))
            except OSError:
                # Part of a PUBACK may have gone out (a send timeout): the stream cannot be
                # trusted any more. Drop the connection; the broker redelivers what is unacked.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                return False
            self._last_sent = time.monotonic()
            return True

    def close(self) -> None:
        """Disconnect cleanly and stop the reader thread (idempotent)."""
        self._closing.set()
        with self._send_lock:
            sock = self._sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.sendall(DISCONNECT_PACKET)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(10)

    # reader thread ----------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self._config.min_backoff_s
        while not self._closing.is_set():
            reason = "closed"
            try:
                sock, reader = self._connect()
                backoff = self._config.min_backoff_s
                self._read(sock, reader)
            except ConnectionRefused as exc:
                reason = str(exc)
                log.warning("mqtt %s: connection refused: %s", self._config.client_id, exc)
            except (OSError, ProtocolError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a callback failed: never let the reader die silently
                log.exception("mqtt %s: message handling failed", self._config.client_id)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                was_connected = self._drop()
            if was_connected:
                self._on_disconnect(reason)
            if self._closing.wait(backoff):
                break
            backoff = min(backoff * 2, self._config.max_backoff_s)

    def _connect(self) -> tuple[socket.socket, PacketReader]:
        c = self._config
        connect = encode_connect(c.client_id, False, c.keepalive_s, c.username, c.password)
        sock, reader, session_present, packets = open_session(c.host, c.port, connect)
        try:
            sock.sendall(encode_subscribe(1, [(f, 1) for f in c.filters]))
        except BaseException:
            sock.close()
            raise
        sock.settimeout(min(1.0, c.keepalive_s / 2))
        with self._send_lock:
            self._sock = sock
            self._last_sent = time.monotonic()
        self._on_connect(session_present)
        # Whatever followed CONNACK in the same read (a resumed session delivers at once).
        self._dispatch(packets)
        return sock, reader

    def _read(self, sock: socket.socket, reader: PacketReader) -> None:
        keepalive = self._config.keepalive_s
        last_heard = time.monotonic()
        while not self._closing.is_set():
            try:
                data = sock.recv(READ_SIZE)
            except TimeoutError:
                data = None
            now = time.monotonic()
            if data is not None:
                if not data:
                    raise ConnectionError("connection closed by the broker")
                last_heard = now
                self._dispatch(reader.feed(data))
            if now - last_heard > 1.5 * keepalive:
                raise ConnectionError("no answer from the broker within 1.5 x keepalive")
            if now - self._last_sent >= keepalive / 2:
                with self._send_lock:
                    sock.sendall(PINGREQ_PACKET)
                    self._last_sent = now

    def _dispatch(self, packets: list[Packet]) -> None:
        messages: list[Publish] = []
        for p in packets:
            if p.type == PUBLISH:
                messages.append(parse_publish(p.flags, p.body))
            elif p.type == SUBACK:
                _mid, granted = parse_suback(p.body)
                if 0x80 in granted:
                    log.error(
                        "mqtt %s: the broker refused a subscription to %s",
                        self._config.client_id,
                        ", ".join(self._config.filters),
                    )
        if messages:
            self._on_messages(messages)

    def _drop(self) -> bool:
        with self._send_lock:
            sock, self._sock = self._sock, None
        if sock is None:
            return False
        with contextlib.suppress(OSError):
            sock.close()
        return True
