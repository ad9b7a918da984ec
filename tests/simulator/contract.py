"""An independent reading of DESIGN.md §4.1, used to judge the simulator's messages.

``violation`` returns None for a message the pipeline must accept and a short reason for one
it must reject. It is written from the design document, not from the simulator's code.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from storage.registry_seed import RegistrySeed

SEVERITIES = {"critical", "high", "medium", "low", "info"}
EXACT_KEYS = {
    "telemetry": {"battery", "signal", "temperature", "timestamp", "message_id"},
    "gps": {"lat", "lon", "accuracy", "guard_id", "client_id", "timestamp", "message_id"},
    "sensor": {"value", "state", "timestamp", "message_id"},
    "alert": {"alert_type", "severity", "message", "location", "timestamp", "message_id"},
}
_TOPICS = (
    ("telemetry", re.compile(r"^device/([^/]+)/telemetry$")),
    ("gps", re.compile(r"^guard/(\d+)/gps$")),
    ("sensor", re.compile(r"^sensor/([^/]+)/([^/]+)$")),
    ("alert", re.compile(r"^alert/([^/]+)/([^/]+)$")),
    ("health", re.compile(r"^system/([^/]+)/health$")),
)


def topic_family(topic: str) -> tuple[str, tuple[str, ...]] | None:
    for family, pattern in _TOPICS:
        m = pattern.match(topic)
        if m:
            return family, m.groups()
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_object(payload: bytes) -> dict[str, Any] | str:
    """The payload as a JSON object, or why it is not one."""
    try:
        body = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        return "not JSON"
    if not isinstance(body, dict):
        return "not an object"
    return body


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def timestamp_ok(v: Any) -> bool:
    if v is None:
        return True  # missing: broker receipt time
    if is_number(v):
        return True
    if not isinstance(v, str):
        return False
    try:
        ts = datetime.fromisoformat(v)
    except ValueError:
        return False
    return ts.tzinfo is not None and ts.utcoffset() is not None


def violation(topic: str, payload: bytes, reg: RegistrySeed) -> str | None:
    """None if the message satisfies the contract and the registry, else the reason."""
    found = topic_family(topic)
    if found is None:
        return "topic"
    family, parts = found
    body = decode_object(payload)
    if isinstance(body, str):
        return body
    if not timestamp_ok(body.get("timestamp")):
        return "timestamp"
    devices = {d.device_id: d for d in reg.devices}
    guards = {g.guard_id: g for g in reg.guards}
    if family == "telemetry":
        if parts[0] not in devices:
            return "unknown device"
        for key in ("battery", "signal", "temperature"):
            if key in body and not is_number(body[key]):
                return f"{key} not a number"
        if "battery" in body and not 0 <= body["battery"] <= 100:
            return "battery range"
    elif family == "gps":
        guard = guards.get(int(parts[0]))
        if guard is None:
            return "unknown guard"
        for key, bound in (("lat", 90), ("lon", 180)):
            if not is_number(body.get(key)):
                return f"{key} missing or not a number"
            if abs(body[key]) > bound:
                return f"{key} range"
        if "accuracy" in body and not (is_number(body["accuracy"]) and body["accuracy"] >= 0):
            return "accuracy"
        if body.get("guard_id") not in (None, guard.guard_id):
            return "guard_id disagrees with topic"
        if body.get("client_id") not in (None, guard.tenant_id):
            return "tenant mismatch"
    elif family == "sensor":
        if parts[0] not in devices:
            return "unknown device"
        if body.get("value") is None and body.get("state") is None:
            return "sensor without value and state"
        if body.get("value") is not None and not is_number(body["value"]):
            return "value not a number"
    elif family == "alert":
        if parts[1] not in devices:
            return "unknown device"
        if body.get("alert_type") not in (None, parts[0]):
            return "alert_type disagrees with topic"
        if body.get("severity") not in (None, *SEVERITIES):
            return "severity"
        loc = body.get("location")
        if loc is not None and not (
            isinstance(loc, dict)
            and is_number(loc.get("lat"))
            and is_number(loc.get("lon"))
            and abs(loc["lat"]) <= 90
            and abs(loc["lon"]) <= 180
        ):
            return "location"
    return None
