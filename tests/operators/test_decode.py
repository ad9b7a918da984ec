from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.decode import REASONS, decode, message_identity
from operators.records import (
    DeadLetter,
    DeviceAlert,
    Position,
    SensorReading,
    SystemHealth,
    Telemetry,
)

NOW = datetime(2026, 11, 1, 10, 0, 5, tzinfo=UTC)
TS = "2026-11-01T10:00:00+00:00"


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("topic", "payload", "kind"),
    [
        ("device/d-1/telemetry", j({"battery": 85, "signal": -65, "temperature": 25.5, "timestamp": TS}), Telemetry),
        ("guard/123/gps", j({"lat": 12.9716, "lon": 77.5946, "accuracy": 10.5, "guard_id": 123, "client_id": 1, "timestamp": TS}), Position),
        ("sensor/s-9/door", j({"value": 1, "state": "open", "timestamp": TS}), SensorReading),
        ("sensor/s-9/smoke", j({"value": True, "timestamp": TS}), SensorReading),
        ("alert/panic/d-1", j({"alert_type": "panic", "severity": "critical", "message": "Panic button pressed", "location": {"lat": 12.97, "lon": 77.59}, "timestamp": TS}), DeviceAlert),
        ("system/api/health", j({"status": "ok", "timestamp": TS}), SystemHealth),
        ("device/d-1/telemetry", j({"battery": 0, "timestamp": 1793527200}), Telemetry),
    ],
)  # fmt: skip
def test_valid_messages_decode_to_typed_records(topic: str, payload: bytes, kind: type) -> None:
    record = decode(topic, payload, NOW)
    assert isinstance(record, kind)


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "detail"),
    [
        ("device/d-1/telemetry", b"x" * (1024 * 1024 + 1), "too_large", "limit"),
        ("bogus/x", j({}), "unknown_topic", "not in the contract"),
        ("device/d-1/commands", j({}), "unknown_topic", "not in the contract"),
        ("guard/abc/gps", j({"lat": 1, "lon": 1}), "unknown_topic", "not an integer"),
        ("device/d-1/telemetry", b"\xff\xfe", "invalid_utf8", "not UTF-8"),
        ("device/d-1/telemetry", b"{", "invalid_json", "not JSON"),
        ("device/d-1/telemetry", b'{"battery": NaN}', "invalid_json", "not JSON"),
        ("device/d-1/telemetry", b"[1, 2]", "not_an_object", "JSON object"),
        ("system/x/health", b"42", "not_an_object", "JSON object"),
        ("device/d-1/telemetry", j({"battery": 150}), "invalid_field", "$.battery"),
        ("device/d-1/telemetry", j({"battery": "full"}), "invalid_field", "$.battery"),
        ("device/d-1/telemetry", b'{"battery": 1e999}', "invalid_field", "$.battery"),
        ("guard/1/gps", j({"lat": 91, "lon": 0}), "invalid_field", "$.lat"),
        ("guard/1/gps", j({"lat": 0, "lon": -180.5}), "invalid_field", "$.lon"),
        ("guard/1/gps", j({"lat": 0, "lon": 0, "accuracy": -1}), "invalid_field", "$.accuracy"),
        ("guard/1/gps", j({"lon": 0}), "invalid_field", "lat"),
        ("guard/1/gps", j({"lat": 0, "lon": 0, "guard_id": 2}), "invalid_field", "disagrees"),
        ("sensor/s/door", j({"timestamp": TS}), "invalid_field", "value or a state"),
        ("alert/panic/d", j({"severity": "apocalyptic"}), "invalid_field", "severity"),
        ("alert/panic/d", j({"alert_type": "fire"}), "invalid_field", "disagrees"),
        ("device/d/telemetry", j({"timestamp": "yesterday"}), "invalid_timestamp", "ISO-8601"),
        ("device/d/telemetry", j({"timestamp": "2026-11-01T10:00:00"}), "invalid_timestamp", "offset"),
        ("device/d/telemetry", j({"timestamp": 0}), "invalid_timestamp", "implausibly far"),
        ("device/d/telemetry", j({"timestamp": 1e300}), "invalid_timestamp", "out of range"),
    ],
)  # fmt: skip
def test_invalid_messages_become_dead_letters(
    topic: str, payload: bytes, reason: str, detail: str
) -> None:
    record = decode(topic, payload, NOW)
    assert isinstance(record, DeadLetter), record
    assert record.reason == reason
    assert detail in record.detail
    assert record.payload_head == payload[:256]
    assert record.payload_size == len(payload)
    assert record.received_at == NOW


def test_missing_timestamp_means_receipt_time() -> None:
    record = decode("device/d/telemetry", j({"battery": 50}), NOW)
    assert isinstance(record, Telemetry)
    assert record.ts == NOW


def test_offsets_are_normalised_to_utc() -> None:
    record = decode("device/d/telemetry", j({"timestamp": "2026-11-01T15:30:00+05:30"}), NOW)
    assert isinstance(record, Telemetry)
    assert record.ts == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    assert record.ts.tzinfo is UTC


def test_message_identity_prefers_the_devices_id() -> None:
    with_id = decode("device/d/telemetry", j({"message_id": "m-1", "timestamp": TS}), NOW)
    assert isinstance(with_id, Telemetry)
    assert with_id.msg_id == "m-1"
    payload = j({"battery": 3, "timestamp": TS})
    first = decode("device/d/telemetry", payload, NOW)
    again = decode("device/d/telemetry", payload, NOW + timedelta(seconds=30))
    assert first.msg_id == again.msg_id == message_identity("device/d/telemetry", payload, None)
    other_topic = decode("device/e/telemetry", payload, NOW)
    assert other_topic.msg_id != first.msg_id


TOPICS = st.sampled_from(
    ["device/d/telemetry", "guard/7/gps", "sensor/s/door", "alert/panic/d", "system/c/health"]
) | st.text(max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)  # fmt: skip
FIELD_NAMES = st.sampled_from(
    ["lat", "lon", "accuracy", "battery", "signal", "temperature", "timestamp", "value",
     "state", "severity", "message", "location", "guard_id", "client_id", "alert_type",
     "message_id"]
)  # fmt: skip
CONTRACTISH = st.dictionaries(FIELD_NAMES, JSON, max_size=8)


@settings(max_examples=500, deadline=None)
@given(topic=TOPICS, payload=st.binary(max_size=300))
def test_decoder_never_raises_on_arbitrary_bytes(topic: str, payload: bytes) -> None:
    record = decode(topic, payload, NOW)
    if isinstance(record, DeadLetter):
        assert record.reason in REASONS
        assert "\n" not in record.detail


@settings(max_examples=500, deadline=None)
@given(topic=TOPICS, body=JSON | CONTRACTISH)
def test_decoder_never_raises_on_arbitrary_json(topic: str, body: object) -> None:
    payload = json.dumps(body).encode()
    record = decode(topic, payload, NOW)
    if isinstance(record, DeadLetter):
        assert record.reason in REASONS
    else:
        assert record.ts.tzinfo is not None
        assert record.received_at == NOW


def test_invalid_utf8_inside_an_ignored_field_is_rejected() -> None:
    payload = b'{"battery": 50, "note": "\xff\xfe"}'
    record = decode("device/d/telemetry", payload, NOW)
    assert isinstance(record, DeadLetter)
    assert record.reason == "invalid_utf8"
