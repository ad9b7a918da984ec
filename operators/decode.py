"""Decode and validate inbound MQTT messages (DESIGN.md §4.1).

:func:`decode` never raises: it returns a typed record or a :class:`DeadLetter` whose
``reason`` is one of :data:`REASONS` and whose ``detail`` says what is wrong in one line.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from noc.domain import SEVERITIES
from operators.records import (
    DeadLetter,
    DeviceAlert,
    Position,
    Record,
    SensorReading,
    SystemHealth,
    Telemetry,
)

MAX_PAYLOAD_BYTES = 1024 * 1024
DEAD_LETTER_HEAD_BYTES = 256
# Event times outside [received - MAX_PAST, received + MAX_FUTURE] are implausible (a device
# clock reset to 1970, a typo in the year) and go to the dead letters with the reason.
MAX_PAST_S = 30 * 24 * 3600.0
MAX_FUTURE_S = 24 * 3600.0

REASONS = (
    "too_large",
    "unknown_topic",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "invalid_field",
    "invalid_timestamp",
    "unknown_device",
    "tenant_mismatch",
    "storage_rejected",
)

_ID_MAX = 128
Lat = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
Lon = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
Timestamp = str | float | None
MessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=_ID_MAX)] | None


class _Telemetry(msgspec.Struct):
    battery: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    signal: Annotated[float, msgspec.Meta(ge=-200, le=50)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=-100, le=200)] | None = None
    timestamp: Timestamp = None
    message_id: MessageId = None


class _Position(msgspec.Struct):
    lat: Lat
    lon: Lon
    accuracy: Annotated[float, msgspec.Meta(ge=0, le=100_000)] | None = None
    guard_id: int | str | None = None
    client_id: int | None = None
    timestamp: Timestamp = None
    message_id: MessageId = None


class _Sensor(msgspec.Struct):
    value: float | bool | None = None
    state: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    timestamp: Timestamp = None
    message_id: MessageId = None


class _Location(msgspec.Struct):
    lat: Lat
    lon: Lon


class _Alert(msgspec.Struct):
    alert_type: str | None = None
    severity: str | None = None
    message: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    location: _Location | None = None
    timestamp: Timestamp = None
    message_id: MessageId = None


_SEVERITIES = frozenset(SEVERITIES)
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t) for t in (_Telemetry, _Position, _Sensor, _Alert)
}
_ANY_DECODER = msgspec.json.Decoder()


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def message_identity(topic: str, payload: bytes, message_id: str | None) -> str:
    """The device's message id, else a stable hash of topic and payload (idempotency key)."""
    if message_id:
        return message_id
    digest = hashlib.blake2b(topic.encode("utf-8", "replace"), digest_size=12)
    digest.update(b"\0")
    digest.update(payload)
    return "h:" + digest.hexdigest()


def decode(topic: str, payload: bytes, received_at: datetime) -> Record:
    """Turn one MQTT message into a record or a dead letter. Must not raise."""
    try:
        return _decode(topic, payload, received_at)
    except _Reject as rej:
        return _dead(topic, payload, received_at, rej.reason, rej.detail)
    except Exception as exc:  # the contract is "never raises"
        return _dead(topic, payload, received_at, "invalid_field", f"{type(exc).__name__}: {exc}")


def dead_letter(
    topic: str, payload: bytes, received_at: datetime, reason: str, detail: str, tenant_id: int = 0
) -> DeadLetter:
    """A dead letter for a message rejected after decoding (e.g. by enrichment)."""
    return _dead(topic, payload, received_at, reason, detail, tenant_id)


def _dead(
    topic: str,
    payload: bytes,
    received_at: datetime,
    reason: str,
    detail: str,
    tenant_id: int = 0,
) -> DeadLetter:
    return DeadLetter(
        topic=topic[:512],
        reason=reason,
        detail=detail.replace("\n", " ")[:500],
        payload_head=bytes(payload[:DEAD_LETTER_HEAD_BYTES]),
        payload_size=len(payload),
        msg_id=message_identity(topic, payload, None),
        received_at=received_at,
        tenant_id=tenant_id,
    )


def _decode(topic: str, payload: bytes, received_at: datetime) -> Record:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _Reject("too_large", f"payload is {len(payload)} bytes; limit {MAX_PAYLOAD_BYTES}")
    try:
        payload.decode("utf-8")  # msgspec does not check strings of fields it skips
    except UnicodeDecodeError as uerr:
        raise _Reject(
            "invalid_utf8", f"payload is not UTF-8 ({uerr.reason} at byte {uerr.start})"
        ) from None
    parts = topic.split("/")
    family = parts[0] if parts else ""
    if family == "device" and len(parts) == 3 and parts[2] == "telemetry":
        return _telemetry(_ident(parts[1], "device_id"), topic, payload, received_at)
    if family == "guard" and len(parts) == 3 and parts[2] == "gps":
        return _position(parts[1], topic, payload, received_at)
    if family == "sensor" and len(parts) == 3:
        return _sensor(
            _ident(parts[1], "sensor_id"), _ident(parts[2], "kind"), topic, payload, received_at
        )
    if family == "alert" and len(parts) == 3:
        return _alert(
            _ident(parts[1], "alert_type"),
            _ident(parts[2], "source_id"),
            topic,
            payload,
            received_at,
        )
    if family == "system" and len(parts) == 3 and parts[2] == "health":
        return _health(_ident(parts[1], "component"), topic, payload, received_at)
    raise _Reject("unknown_topic", f"topic {topic[:200]!r} is not in the contract")


def _ident(value: str, what: str) -> str:
    if not value or len(value) > _ID_MAX or not value.isprintable():
        raise _Reject("unknown_topic", f"topic has an invalid {what} {value[:_ID_MAX]!r}")
    return value


def _parse(payload: bytes, schema: type[Any]) -> Any:
    try:
        return _DECODERS[schema].decode(payload)
    except msgspec.ValidationError as exc:
        raise _Reject(*_classify_validation(payload, exc)) from None
    except msgspec.DecodeError as exc:
        raise _Reject(*_classify_decode(payload, exc)) from None


def _classify_decode(payload: bytes, exc: Exception) -> tuple[str, str]:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as uerr:
        return "invalid_utf8", f"payload is not UTF-8 ({uerr.reason} at byte {uerr.start})"
    return "invalid_json", f"payload is not JSON: {exc}"


def _classify_validation(payload: bytes, exc: Exception) -> tuple[str, str]:
    del payload
    message = str(exc)
    if message.startswith("Expected `object`") and " - at `$." not in message:
        return "not_an_object", "payload must be a JSON object"
    return "invalid_field", message


def _timestamp(value: Timestamp, received_at: datetime) -> datetime:
    if value is None:
        return received_at
    if isinstance(value, float | int):
        if not math.isfinite(value):
            raise _Reject("invalid_timestamp", "timestamp must be finite")
        try:
            ts = datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            raise _Reject("invalid_timestamp", f"epoch timestamp {value!r} out of range") from None
    else:
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            raise _Reject(
                "invalid_timestamp", f"timestamp {value[:64]!r} is not ISO-8601"
            ) from None
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise _Reject("invalid_timestamp", f"timestamp {value[:64]!r} has no UTC offset")
        ts = ts.astimezone(UTC)
    skew = (ts - received_at).total_seconds()
    if skew < -MAX_PAST_S or skew > MAX_FUTURE_S:
        raise _Reject(
            "invalid_timestamp", f"timestamp {ts.isoformat()} is implausibly far from receipt time"
        )
    return ts


def _telemetry(device_id: str, topic: str, payload: bytes, received_at: datetime) -> Telemetry:
    p: _Telemetry = _parse(payload, _Telemetry)
    return Telemetry(
        device_id=device_id,
        ts=_timestamp(p.timestamp, received_at),
        battery=p.battery,
        signal=p.signal,
        temperature=p.temperature,
        msg_id=message_identity(topic, payload, p.message_id),
        received_at=received_at,
    )


def _position(raw_guard: str, topic: str, payload: bytes, received_at: datetime) -> Position:
    try:
        guard_id = int(raw_guard)
    except ValueError:
        raise _Reject("unknown_topic", f"guard id {raw_guard[:64]!r} is not an integer") from None
    if not 0 <= guard_id < 2**31:
        raise _Reject("unknown_topic", f"guard id {guard_id} out of range")
    p: _Position = _parse(payload, _Position)
    if p.guard_id is not None and str(p.guard_id) != raw_guard:
        raise _Reject("invalid_field", f"guard_id {p.guard_id!r} disagrees with topic {topic!r}")
    return Position(
        guard_id=guard_id,
        ts=_timestamp(p.timestamp, received_at),
        lat=p.lat,
        lon=p.lon,
        accuracy=p.accuracy,
        client_id=p.client_id,
        msg_id=message_identity(topic, payload, p.message_id),
        received_at=received_at,
    )


def _sensor(
    sensor_id: str, kind: str, topic: str, payload: bytes, received_at: datetime
) -> SensorReading:
    p: _Sensor = _parse(payload, _Sensor)
    value = float(p.value) if p.value is not None else None
    if p.value is None and p.state is None:
        raise _Reject("invalid_field", "sensor reading needs a value or a state")
    return SensorReading(
        sensor_id=sensor_id,
        kind=kind,
        ts=_timestamp(p.timestamp, received_at),
        value=value,
        state=p.state,
        msg_id=message_identity(topic, payload, p.message_id),
        received_at=received_at,
    )


def _alert(
    alert_type: str, source_id: str, topic: str, payload: bytes, received_at: datetime
) -> DeviceAlert:
    p: _Alert = _parse(payload, _Alert)
    if p.alert_type is not None and p.alert_type != alert_type:
        raise _Reject(
            "invalid_field", f"alert_type {p.alert_type[:64]!r} disagrees with topic {topic!r}"
        )
    if p.severity is not None and p.severity not in _SEVERITIES:
        raise _Reject("invalid_field", f"severity {p.severity[:32]!r} is not a known level")
    return DeviceAlert(
        source_id=source_id,
        alert_type=alert_type,
        ts=_timestamp(p.timestamp, received_at),
        severity=p.severity,
        message=p.message,
        lat=p.location.lat if p.location else None,
        lon=p.location.lon if p.location else None,
        msg_id=message_identity(topic, payload, p.message_id),
        received_at=received_at,
    )


def _health(component: str, topic: str, payload: bytes, received_at: datetime) -> SystemHealth:
    try:
        body = _ANY_DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise _Reject(*_classify_decode(payload, exc)) from None
    if not isinstance(body, dict):
        raise _Reject("not_an_object", "payload must be a JSON object")
    raw_ts = body.get("timestamp")
    ts_value: Timestamp = raw_ts if isinstance(raw_ts, str | float | int) else None
    if isinstance(raw_ts, bool):
        ts_value = None
    raw_id = body.get("message_id")
    return SystemHealth(
        component=component,
        ts=_timestamp(ts_value, received_at),
        payload=body,
        msg_id=message_identity(topic, payload, raw_id if isinstance(raw_id, str) else None),
        received_at=received_at,
    )
