"""MQTT 3.1.1 packet bytes (OASIS MQTT 3.1.1, section 2 and 3) and stream reassembly.

Exact bytes are checked against the standard's tables; the hypothesis properties check that
any PUBLISH stream survives any chunking through :class:`~flows.mqtt_codec.PacketReader`, and
that arbitrary input is either parsed or rejected with ``ProtocolError`` (nothing else).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.mqtt_codec import (
    CONNACK,
    CONNECT,
    DISCONNECT,
    DISCONNECT_PACKET,
    MAX_REMAINING_LENGTH,
    PINGREQ,
    PINGREQ_PACKET,
    PUBACK,
    PUBLISH,
    SUBACK,
    SUBSCRIBE,
    Packet,
    PacketReader,
    ProtocolError,
    Publish,
    _remaining_length,
    encode_connect,
    encode_pubacks,
    encode_publish,
    encode_subscribe,
    parse_connack,
    parse_publish,
    parse_suback,
)


def h(text: str) -> bytes:
    """Bytes from space-separated hex, as the standard prints them."""
    return bytes.fromhex(text)


# --- exact bytes ---------------------------------------------------------------------------


REMAINING_LENGTHS = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "80 01"),
    (16383, "ff 7f"),
    (16384, "80 80 01"),
    (2097151, "ff ff 7f"),
    (2097152, "80 80 80 01"),
    (268435455, "ff ff ff 7f"),
]
"""Table 2.4 "Size of Remaining Length field" (MQTT 3.1.1, section 2.2.3) at its boundaries."""


@pytest.mark.parametrize(
    ("n", "encoded"),
    REMAINING_LENGTHS,
)
def test_remaining_length_matches_the_standards_table(n: int, encoded: str) -> None:
    """Table 2.4 "Size of Remaining Length field" (section 2.2.3)."""
    assert _remaining_length(n) == h(encoded)


@pytest.mark.parametrize("n", [-1, MAX_REMAINING_LENGTH + 1])
def test_remaining_length_out_of_range_is_refused(n: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        _remaining_length(n)


@pytest.mark.parametrize(
    ("n", "header"),
    [(n, header) for n, header in REMAINING_LENGTHS if n <= 2097152],  # bodies up to 2 MiB
)
def test_reader_decodes_remaining_length_at_the_boundaries(n: int, header: str) -> None:
    body = bytes(i % 251 for i in range(n))
    stream = bytes([0x30]) + h(header) + body + PINGREQ_PACKET
    reader = PacketReader()
    # Everything but the last byte: the PUBLISH is complete, the PINGREQ is not.
    assert reader.feed(stream[:-1]) == [Packet(PUBLISH, 0, body)]
    assert reader.feed(stream[-1:]) == [Packet(PINGREQ, 0, b"")]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # Section 3.1.2.10 example: clean session, keepalive 10 s, no credentials.
        ({"client_id": "c", "clean_session": True, "keepalive_s": 10}, "10 0d 00 04 4d 51 54 54 04 02 00 0a 00 01 63"),
        # Persistent session: the clean session bit (0x02) is clear.
        ({"client_id": "ab", "clean_session": False, "keepalive_s": 60}, "10 0e 00 04 4d 51 54 54 04 00 00 3c 00 02 61 62"),
        # Keepalive is big-endian, two bytes.
        ({"client_id": "", "clean_session": True, "keepalive_s": 65535}, "10 0c 00 04 4d 51 54 54 04 02 ff ff 00 00"),
        # User name flag 0x80 and password flag 0x40; the payload is id, user name, password.
        ({"client_id": "abc", "clean_session": False, "keepalive_s": 60, "username": "u", "password": "pw"}, "10 16 00 04 4d 51 54 54 04 c0 00 3c 00 03 61 62 63 00 01 75 00 02 70 77"),
        ({"client_id": "abc", "clean_session": True, "keepalive_s": 60, "username": "u", "password": "pw"}, "10 16 00 04 4d 51 54 54 04 c2 00 3c 00 03 61 62 63 00 01 75 00 02 70 77"),
        # A user name without a password: only the user name flag.
        ({"client_id": "abc", "clean_session": True, "keepalive_s": 60, "username": "u"}, "10 12 00 04 4d 51 54 54 04 82 00 3c 00 03 61 62 63 00 01 75"),
        # A password without a user name is not allowed (3.1.2.9): neither is sent.
        ({"client_id": "abc", "clean_session": True, "keepalive_s": 60, "password": "pw"}, "10 0f 00 04 4d 51 54 54 04 02 00 3c 00 03 61 62 63"),
        # Strings are UTF-8 with a byte count: "é" is two bytes.
        ({"client_id": "é", "clean_session": True, "keepalive_s": 0}, "10 0e 00 04 4d 51 54 54 04 02 00 00 00 02 c3 a9"),
    ],
)  # fmt: skip
def test_connect_bytes(kwargs: dict[str, object], expected: str) -> None:
    assert encode_connect(**kwargs) == h(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mid", "filters", "expected"),
    [
        # Fixed header 0x82: type 8, reserved flags 0b0010 (section 3.8.1).
        (10, [("a/b", 1)], "82 08 00 0a 00 03 61 2f 62 01"),
        (0x1234, [("a/#", 0), ("+/c", 1)], "82 0e 12 34 00 03 61 2f 23 00 00 03 2b 2f 63 01"),
        (65535, [("é", 1)], "82 07 ff ff 00 02 c3 a9 01"),
    ],
)  # fmt: skip
def test_subscribe_bytes(mid: int, filters: list[tuple[str, int]], expected: str) -> None:
    assert encode_subscribe(mid, filters) == h(expected)


@pytest.mark.parametrize(
    ("mids", "expected"),
    [
        ([], ""),
        ([1], "40 02 00 01"),
        ([0x1234], "40 02 12 34"),
        ([65535, 256, 7], "40 02 ff ff 40 02 01 00 40 02 00 07"),
    ],
)  # fmt: skip
def test_puback_bytes(mids: list[int], expected: str) -> None:
    assert encode_pubacks(mids) == h(expected)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"topic": "a/b", "payload": b"hi"}, "30 07 00 03 61 2f 62 68 69"),
        ({"topic": "a/b", "payload": b"hi", "retain": True}, "31 07 00 03 61 2f 62 68 69"),
        ({"topic": "a/b", "payload": b"hi", "qos": 1, "mid": 0x0102}, "32 09 00 03 61 2f 62 01 02 68 69"),
        ({"topic": "a/b", "payload": b"", "qos": 1, "mid": 5, "retain": True}, "33 07 00 03 61 2f 62 00 05"),
        # A packet id with QoS 0 is not sent (section 3.3.2.2).
        ({"topic": "t", "payload": b"x", "qos": 0, "mid": 9}, "30 04 00 01 74 78"),
    ],
)  # fmt: skip
def test_publish_bytes(kwargs: dict[str, object], expected: str) -> None:
    assert encode_publish(**kwargs) == h(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"topic": "t", "payload": b"", "qos": 2, "mid": 1}, "qos must be 0 or 1"),
        ({"topic": "t", "payload": b"", "qos": 1}, "QoS 1 needs a packet id"),
        ({"topic": "x" * 65536, "payload": b""}, "at most 65535 bytes"),
    ],
)  # fmt: skip
def test_publish_refuses_what_it_cannot_encode(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_publish(**kwargs)  # type: ignore[arg-type]


def test_fixed_packets() -> None:
    assert h("c0 00") == PINGREQ_PACKET
    assert h("e0 00") == DISCONNECT_PACKET
    reader = PacketReader()
    assert reader.feed(PINGREQ_PACKET + DISCONNECT_PACKET) == [
        Packet(PINGREQ, 0, b""),
        Packet(DISCONNECT, 0, b""),
    ]


def test_encoded_packets_read_back_with_their_type_and_flags() -> None:
    stream = (
        encode_connect("c", True, 30, "u", "p")
        + encode_subscribe(7, [("a/+", 1)])
        + encode_pubacks([3])
        + encode_publish("t", b"p", 1, 4, retain=True)
    )
    packets = PacketReader().feed(stream)
    assert [(p.type, p.flags) for p in packets] == [
        (CONNECT, 0),
        (SUBSCRIBE, 2),
        (PUBACK, 0),
        (PUBLISH, 0b0011),
    ]
    assert packets[2].body == h("00 03")


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "body", "expected"),
    [
        (parse_connack, "00 00", (False, 0)),
        (parse_connack, "01 00", (True, 0)),
        (parse_connack, "00 05", (False, 5)),
        (parse_connack, "01 04", (True, 4)),
        (parse_suback, "00 0a 01", (10, [1])),
        (parse_suback, "12 34 00 01 80", (0x1234, [0, 1, 0x80])),
        (parse_suback, "ff ff 80", (65535, [0x80])),
    ],
)  # fmt: skip
def test_parse_acks(parse: Callable[[bytes], object], body: str, expected: object) -> None:
    assert parse(h(body)) == expected


@pytest.mark.parametrize(
    ("parse", "body", "name"),
    [
        (parse_connack, "", "CONNACK"),
        (parse_connack, "00", "CONNACK"),
        (parse_connack, "00 00 00", "CONNACK"),
        (parse_suback, "", "SUBACK"),
        (parse_suback, "00", "SUBACK"),
        (parse_suback, "00 0a", "SUBACK"),
    ],
)  # fmt: skip
def test_parse_acks_refuse_wrong_lengths(
    parse: Callable[[bytes], object], body: str, name: str
) -> None:
    with pytest.raises(ProtocolError, match=name):
        parse(h(body))


@pytest.mark.parametrize(
    ("flags", "body", "expected"),
    [
        (0b0000, "00 01 74 78 79", Publish("t", b"xy", 0, None)),
        (0b0001, "00 01 74", Publish("t", b"", 0, None, retain=True)),
        (0b0010, "00 01 74 ab cd 78", Publish("t", b"x", 1, 0xABCD)),
        (0b1010, "00 01 74 00 01", Publish("t", b"", 1, 1, dup=True)),
        (0b0100, "00 00 00 02 ff", Publish("", b"\xff", 2, 2)),
        # Invalid UTF-8 in the topic is replaced rather than crashing the reader.
        (0b0000, "00 01 ff 78", Publish("\ufffd", b"x", 0, None)),
    ],
)  # fmt: skip
def test_parse_publish(flags: int, body: str, expected: Publish) -> None:
    assert parse_publish(flags, h(body)) == expected


@pytest.mark.parametrize(
    ("flags", "body", "message"),
    [
        (0b0110, "00 01 74 00 01", "QoS 3"),
        (0b0000, "", "without a topic"),
        (0b0000, "00", "without a topic"),
        (0b0000, "00 03 61 62", "shorter than its topic"),
        (0b0010, "00 01 74", "shorter than its topic"),
        (0b0010, "00 01 74 00", "shorter than its topic"),
    ],
)  # fmt: skip
def test_parse_publish_refuses_malformed(flags: int, body: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_publish(flags, h(body))


# --- the reader ----------------------------------------------------------------------------


def test_reader_waits_for_the_rest_of_a_packet() -> None:
    packet = encode_publish("a/b", b"payload", 1, 42)
    reader = PacketReader()
    for i in range(len(packet) - 1):
        assert reader.feed(packet[i : i + 1]) == []
    assert reader.feed(packet[-1:]) == [Packet(PUBLISH, 0b0010, packet[2:])]
    assert reader.feed(b"") == []


def test_reader_refuses_a_five_byte_remaining_length() -> None:
    reader = PacketReader()
    assert reader.feed(h("30 ff ff ff")) == []  # could still end on the fourth byte
    with pytest.raises(ProtocolError, match="longer than 4 bytes"):
        reader.feed(h("ff 01"))


def test_reader_accepts_the_largest_four_byte_header_without_its_body() -> None:
    # 268435455 bytes are announced; none is there yet, so nothing is returned.
    assert PacketReader().feed(h("30 ff ff ff 7f 00")) == []


topics = st.text(min_size=1, max_size=40)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Small random payloads, or large ones (up to 70000 bytes) built from a random pattern,
    so the remaining length takes 1, 2 or 3 bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    size = draw(
        st.sampled_from([125, 126, 127, 16379, 16380, 16381, 70000]) | st.integers(0, 70000)
    )
    pattern = draw(st.binary(min_size=1, max_size=16))
    return (pattern * (size // len(pattern) + 1))[:size]


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    qos = draw(st.sampled_from([0, 1]))
    mid = draw(st.integers(1, 65535)) if qos else None
    return Publish(draw(topics), draw(payloads()), qos, mid, retain=draw(st.booleans()))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(publishes(), max_size=6),
    cuts=st.lists(st.integers(0, 500_000), max_size=30),
    byte_by_byte_prefix=st.integers(0, 12),
)
def test_any_publish_stream_survives_any_chunking(
    messages: list[Publish], cuts: list[int], byte_by_byte_prefix: int
) -> None:
    stream = b"".join(encode_publish(m.topic, m.payload, m.qos, m.mid, m.retain) for m in messages)
    chunks = [stream[i : i + 1] for i in range(min(byte_by_byte_prefix, len(stream)))]
    chunks += split(stream[len(chunks) :], cuts)
    reader = PacketReader()
    packets: list[Packet] = []
    for chunk in chunks:
        packets += reader.feed(chunk)
    assert [p.type for p in packets] == [PUBLISH] * len(messages)
    assert [parse_publish(p.flags, p.body) for p in packets] == messages
    assert reader.feed(b"") == []  # nothing left over


def reject_or_parse(packets: list[Packet]) -> None:
    for p in packets:
        assert 0 <= p.type <= 15
        assert 0 <= p.flags <= 15
        with contextlib.suppress(ProtocolError):
            if p.type == PUBLISH:
                parse_publish(p.flags, p.body)
            elif p.type == CONNACK:
                parse_connack(p.body)
            elif p.type == SUBACK:
                parse_suback(p.body)


# Arbitrary bytes, and streams of valid packets with garbage spliced in (which reach deeper).
junk = st.binary(max_size=300)
valid = st.builds(
    lambda m: encode_publish(m.topic, m.payload[:300], m.qos, m.mid, m.retain), publishes()
)
tricky = st.sampled_from([h("30 ff ff ff ff"), h("20 02"), h("90 03"), h("36 04 00 01 74 00")])
streams = junk | st.lists(valid | junk | tricky, max_size=8).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=streams, cuts=st.lists(st.integers(0, 5000), max_size=10))
def test_reader_on_arbitrary_bytes_raises_only_protocol_error(data: bytes, cuts: list[int]) -> None:
    reader = PacketReader()
    received = 0
    try:
        for chunk in split(data, cuts):
            packets = reader.feed(chunk)
            reject_or_parse(packets)
            # A packet is at least two bytes of what was fed.
            received += sum(2 + len(p.body) for p in packets)
            assert received <= len(data)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(flags=st.integers(0, 15), body=st.binary(max_size=40))
def test_parsers_on_arbitrary_bodies_raise_only_protocol_error(flags: int, body: bytes) -> None:
    for parse in (
        lambda: parse_publish(flags, body),
        lambda: parse_connack(body),
        lambda: parse_suback(body),
    ):
        with contextlib.suppress(ProtocolError):
            parse()
