"""MQTT 3.1.1 packets the ingest consumer sends and receives (OASIS MQTT 3.1.1, section 3).

Pure functions and one small stateful reader: no sockets here. :class:`PacketReader` takes
bytes as they arrive (any chunking) and returns whole packets, so one ``recv`` of 256 KiB
yields hundreds of messages for one system call.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"

MAX_REMAINING_LENGTH = 268_435_455
"""The largest remaining length four length bytes can express."""

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class ProtocolError(Exception):
    """The peer sent something that is not MQTT 3.1.1: the connection must be dropped."""


class Packet(NamedTuple):
    """One control packet: type (high nibble), flags (low nibble), variable header + payload.
    (Named tuples: one is made per packet, and a tuple is the cheapest immutable record.)"""

    type: int
    flags: int
    body: bytes


class Publish(NamedTuple):
    """A received application message. ``mid`` is None for QoS 0."""

    topic: str
    payload: bytes
    qos: int
    mid: int | None
    dup: bool = False
    retain: bool = False


def _remaining_length(n: int) -> bytes:
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    if len(raw) > 65535:
        raise ValueError("MQTT strings are at most 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _remaining_length(len(body)) + body


def encode_connect(
    client_id: str,
    clean_session: bool,
    keepalive_s: int,
    username: str = "",
    password: str = "",
) -> bytes:
    """CONNECT for protocol level 4 (3.1.1)."""
    flags = 0x02 if clean_session else 0
    payload = _string(client_id)
    if username:
        flags |= 0x80
        payload += _string(username)
        if password:
            flags |= 0x40
            payload += _string(password)
    header = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s)
    return _packet(CONNECT << 4, header + payload)


def encode_subscribe(mid: int, filters: list[tuple[str, int]]) -> bytes:
    """SUBSCRIBE (fixed header flags 0b0010) for ``(filter, qos)`` pairs."""
    body = struct.pack("!H", mid) + b"".join(_string(f) + bytes([q]) for f, q in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def encode_pubacks(mids: list[int]) -> bytes:
    """PUBACKs for the packet ids, in the given order, as one buffer."""
    return b"".join(struct.pack("!BBH", PUBACK << 4, 2, mid) for mid in mids)


def encode_publish(
    topic: str, payload: bytes, qos: int = 0, mid: int | None = None, retain: bool = False
) -> bytes:
    """PUBLISH (QoS 0 or 1); ``mid`` is required for QoS 1."""
    if qos not in (0, 1):
        raise ValueError("qos must be 0 or 1")
    if qos and mid is None:
        raise ValueError("QoS 1 needs a packet id")
    body = _string(topic) + (struct.pack("!H", mid) if qos and mid is not None else b"") + payload
    return _packet((PUBLISH << 4) | (qos << 1) | int(retain), body)


def parse_connack(body: bytes) -> tuple[bool, int]:
    """``(session_present, return_code)``; raises ProtocolError if malformed."""
    if len(body) != 2:
        raise ProtocolError("CONNACK must be 2 bytes")
    return bool(body[0] & 0x01), body[1]


def parse_suback(body: bytes) -> tuple[int, list[int]]:
    """``(mid, granted)``; a granted value of 0x80 is a refused subscription."""
    if len(body) < 3:
        raise ProtocolError("SUBACK too short")
    return struct.unpack_from("!H", body)[0], list(body[2:])


def parse_publish(flags: int, body: bytes) -> Publish:
    """The message in a PUBLISH packet; raises ProtocolError if malformed."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    if len(body) < 2:
        raise ProtocolError("PUBLISH without a topic")
    (n,) = struct.unpack_from("!H", body)
    start = 2 + n
    if len(body) < start + (2 if qos else 0):
        raise ProtocolError("PUBLISH shorter than its topic")
    topic = body[2:start].decode("utf-8", errors="replace")
    mid = None
    if qos:
        (mid,) = struct.unpack_from("!H", body, start)
        start += 2
    return Publish(topic, body[start:], qos, mid, bool(flags & 0x08), bool(flags & 0x01))


class PacketReader:
    """Reassembles packets from a byte stream fed in arbitrary chunks."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        """Append ``data``; return every packet now complete, in order."""
        buf = self._buf
        buf += data
        out: list[Packet] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            first = buf[pos]
            length = 0
            shift = 0
            i = pos + 1
            complete = False
            while i < end:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    complete = True
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolError("remaining length longer than 4 bytes")
            if not complete or end - i < length:
                break  # the rest of this packet has not arrived yet
            out.append(Packet(first >> 4, first & 0x0F, bytes(buf[i : i + length])))
            pos = i + length
        if pos:
            del buf[:pos]
        return out
