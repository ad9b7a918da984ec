"""Pure pieces of the API and the event builders: no server, no database."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from api.auth import bearer, decode_token, issue_token
from api.errors import Unauthorized
from api.hub import EventHub, Overflow, Subscriber
from api.server import RedactTokens
from operators.records import DeadLetter, Enriched, Position, Telemetry
from storage.events import StoredEvent, _Throttle, device_status_events, position_events

SECRET = "unit-secret-0123456789-0123456789-0123"
T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


def fix(guard: int, seconds: int, tenant: int = 1, lat: float = 12.97) -> Enriched:
    rec = Position(guard, T0 + timedelta(seconds=seconds), lat, 77.59, 4.0, None, f"m{seconds}", T0)
    return Enriched(rec, tenant_id=tenant, guard_id=guard, zone_status="inside", zone_id=100)


def telemetry(device: str, seconds: int, battery: float) -> Enriched:
    rec = Telemetry(device, T0 + timedelta(seconds=seconds), battery, -60.0, 20.0, "m", T0)
    return Enriched(rec, tenant_id=1, device_id=device)


def test_one_position_event_per_guard_the_latest_fix() -> None:
    letter = DeadLetter("x", "bad", "", b"", 0, "m", T0)
    items = [fix(1, 5, lat=1.0), fix(2, 1), fix(1, 9, lat=2.0), fix(1, 7, lat=3.0), letter]
    items.append(fix(1, 3, tenant=2))  # same guard id in another tenant: its own event
    events = position_events(items)
    by_key = {(e.tenant_id, e.payload["guard_id"]): e.payload for e in events}
    assert set(by_key) == {(1, 1), (1, 2), (2, 1)}
    assert by_key[(1, 1)]["lat"] == 2.0
    assert by_key[(1, 1)]["ts"] == (T0 + timedelta(seconds=9)).isoformat()
    assert by_key[(1, 1)]["zone_status"] == "inside"


def test_device_status_is_throttled_per_device() -> None:
    first = device_status_events(
        [telemetry("a", 1, 90), telemetry("a", 2, 80), telemetry("b", 1, 50)]
    )
    assert {e.payload["device_id"]: e.payload["battery"] for e in first} == {"a": 80, "b": 50}
    throttle = _Throttle(30.0)
    assert len(throttle.admit(first, now=100.0)) == 2
    assert throttle.admit(device_status_events([telemetry("a", 3, 70)]), now=110.0) == []
    assert len(throttle.admit(device_status_events([telemetry("a", 4, 60)]), now=130.0)) == 1


def test_subscriber_overflows_once_and_drops_its_queue() -> None:
    async def scenario() -> None:
        sub = Subscriber(tenant_id=1, limit=3)
        assert all(sub.offer(i, f"m{i}") for i in (1, 2, 3))
        assert await sub.take() == [(1, "m1"), (2, "m2"), (3, "m3")]
        assert all(sub.offer(i, "x") for i in (4, 5, 6))
        assert not sub.offer(7, "x")
        assert sub.overflowed and not sub.offer(8, "x")
        with pytest.raises(Overflow):
            await sub.take()

    asyncio.run(scenario())


def test_hub_dispatches_by_tenant_and_drops_overflowed_subscribers() -> None:
    async def scenario() -> None:
        hub = EventHub("postgresql://unused", queue_limit=2)
        a, b, slow = hub.subscribe(1), hub.subscribe(2), hub.subscribe(1)
        hub.dispatch([StoredEvent(10, 1, "a10"), StoredEvent(11, 2, "b11")])
        assert await a.take() == [(10, "a10")]
        assert await b.take() == [(11, "b11")]
        hub.dispatch([StoredEvent(12, 1, "a12"), StoredEvent(13, 1, "a13")])
        assert await a.take() == [(12, "a12"), (13, "a13")]
        hub.dispatch([StoredEvent(14, 1, "a14")])  # slow never took: 3 > limit 2
        assert slow.overflowed
        hub.dispatch([StoredEvent(15, 1, "a15")])
        assert await a.take() == [(14, "a14"), (15, "a15")]
        assert hub.cursor == 15
        hub.unsubscribe(slow)  # idempotent

    asyncio.run(scenario())


def test_tokens_round_trip_and_reject_tampering() -> None:
    token, record = issue_token(SECRET, 7, "admin", "ada", timedelta(hours=1))
    principal = decode_token(SECRET, token)
    assert (principal.tenant_id, principal.role, principal.subject) == (7, "admin", "ada")
    assert principal.token_id == record.token_id
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert {"tenant", "role", "sub", "jti", "exp", "iat"} <= set(claims)
    with pytest.raises(Unauthorized, match="invalid token"):
        decode_token("another-secret-0123456789-0123456789", token)
    forged = jwt.encode({**claims, "tenant": 8}, "wrong-key-0123456789-0123456789-0123", "HS256")
    with pytest.raises(Unauthorized):
        decode_token(SECRET, forged)
    none_alg = jwt.encode({**claims}, None, algorithm="none")
    with pytest.raises(Unauthorized):
        decode_token(SECRET, none_alg)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": 1}, "expired"),
        ({"tenant": "1"}, "bad tenant"),
        ({"role": "root"}, "bad tenant or role"),
        ({"jti": "not-a-uuid"}, "bad jti"),
    ],
)
def test_bad_claims_are_unauthorized(claims: dict[str, object], reason: str) -> None:
    base = {"tenant": 1, "role": "operator", "sub": "x", "jti": str(uuid.uuid4()),
            "exp": int((datetime.now(UTC) + timedelta(hours=1)).timestamp())}  # fmt: skip
    token = jwt.encode({**base, **claims}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match=reason):
        decode_token(SECRET, token)


def test_issue_token_validates_its_input() -> None:
    with pytest.raises(ValueError, match="role"):
        issue_token(SECRET, 1, "root", "x", timedelta(hours=1))
    with pytest.raises(ValueError, match="subject"):
        issue_token(SECRET, 1, "operator", " ", timedelta(hours=1))
    with pytest.raises(ValueError, match="ttl"):
        issue_token(SECRET, 1, "operator", "x", timedelta(0))


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "Token abc"])
def test_bearer_header_must_be_well_formed(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        bearer(header)


def test_bearer_header() -> None:
    assert bearer("Bearer abc.def") == "abc.def"
    assert bearer("bearer  abc ") == "abc"


def test_tokens_in_logged_urls_are_masked() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, "", 0, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5", "/ws?token=eyJ.abc.def&last_event_id=4"), None,
    )  # fmt: skip
    RedactTokens().filter(record)
    assert (
        record.getMessage() == '127.0.0.1:5 - "WebSocket /ws?token=***&last_event_id=4" [accepted]'
    )
