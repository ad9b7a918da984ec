"""The event WebSocket (``settings.api.ws_path``, default ``/ws``).

Authentication, either way (the socket is then scoped to the token's tenant):

- sub-protocol (what the NOC page does; the token never appears in a URL or an access log):
  ``new WebSocket(url, ["noc.v1", "bearer." + token])``; the server selects ``noc.v1``;
- query string (for tools): ``/ws?token=<token>``.

Resume: ``?last_event_id=N`` (the ``id`` of the last event the client processed).

Server -> client, JSON text frames, in this order:

1. ``{"type": "connected", "tenant_id": T, "role": R, "subject": S, "last_event_id": H,
   "resumed_from": N | null}``. ``H`` is the tenant's newest event id at connection time
   (a fresh client loads its snapshot over REST and applies events after ``H``).
2. ``{"type": "reset", "reason": ...}`` only when resuming is impossible (events after ``N``
   were deleted by retention, or ``N`` is newer than any event: the database was replaced);
   the client should reload its snapshot; live events follow.
3. Events ``{"id": N, "type": "alert" | "alert_update" | "position" | "device_status" |
   "zone", "ts": ..., "data": {...}}``: when resuming, first every event of the tenant after
   ``N`` from the database, then live ones; ids strictly increase, no gap, no duplicate.
4. ``{"type": "overflow", "last_event_id": N}`` when the client fell more than
   ``NOC_WS_QUEUE_LIMIT`` events behind, then close code 4429; reconnect with ``N``.

Close codes: 4400 bad ``last_event_id``, 4401 authentication failed, 4429 overflow, 1013
database unavailable (retry), 1012 server restarting (uvicorn, on shutdown).
Client -> server frames are ignored (keep-alive is WebSocket ping/pong).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import psycopg
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.handlers import WebsocketRouteHandler
from psycopg_pool import PoolTimeout

from api import metrics
from api.auth import Principal, authenticate
from api.errors import Unauthorized
from api.hub import Overflow, Subscriber
from api.state import ApiState
from storage import events

log = logging.getLogger(__name__)

SUBPROTOCOL = "noc.v1"
TOKEN_PREFIX = "bearer."
CATCHUP_PAGE = 1000
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_OVERFLOW = 4429
CLOSE_UNAVAILABLE = 1013  # "try again later"


def event_socket_handler(path: str) -> WebsocketRouteHandler:
    """The route handler serving the event socket at ``path``."""
    return websocket(path, name="events")(_event_socket)


async def _event_socket(socket: WebSocket[Any, Any, Any]) -> None:
    api: ApiState = socket.app.state.noc
    offered = _offered_protocols(socket)
    await socket.accept(subprotocols=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        token = _token(socket, offered)
        principal = await authenticate(token, api.settings.api.token_secret, api.apool)
    except Unauthorized as exc:
        metrics.WS_REJECTED.labels("unauthorized").inc()
        await _close(socket, CLOSE_UNAUTHORIZED, str(exc))
        return
    except (psycopg.Error, PoolTimeout):
        metrics.WS_REJECTED.labels("database").inc()
        await _close(socket, CLOSE_UNAVAILABLE, "database unavailable; retry later")
        return
    raw = socket.query_params.get("last_event_id")
    if raw is not None and not (raw.isdigit() and len(raw) < 19):
        metrics.WS_REJECTED.labels("bad_request").inc()
        await _close(socket, CLOSE_BAD_REQUEST, "last_event_id must be a non-negative integer")
        return
    metrics.WS_CONNECTIONS.inc()
    sub: Subscriber | None = None
    try:
        sub, last = await _start(socket, api, principal, int(raw) if raw is not None else None)
        await _stream(socket, sub, last)
    except WebSocketDisconnect:
        pass
    except (psycopg.Error, PoolTimeout) as exc:
        log.warning("event socket: database unavailable: %s", exc)
        await _close(socket, CLOSE_UNAVAILABLE, "database unavailable; retry later")
    finally:
        if sub is not None:
            api.hub.unsubscribe(sub)
        metrics.WS_CONNECTIONS.dec()


async def _start(
    socket: WebSocket[Any, Any, Any], api: ApiState, principal: Principal, resume: int | None
) -> tuple[Subscriber, int]:
    """Send ``connected`` and the catch-up; return the live subscription and the last id sent.

    Order matters: the subscription starts (buffering live events) *before* the last catch-up
    query, and the stream skips ids already sent, so nothing falls between the two.
    """
    tenant = principal.tenant_id
    async with api.apool.connection() as aconn:
        pos = await events.positions(aconn, tenant)
    reset = None
    if resume is not None and resume > pos.sequence_head:
        reset = "last_event_id is newer than any event (the event log was replaced)"
    elif resume is not None and resume < pos.deleted_through:
        reset = "events after last_event_id have expired"
    if resume is None or reset is not None:
        sub = api.hub.subscribe(tenant)
        async with api.apool.connection() as aconn:
            head = (await events.positions(aconn, tenant)).tenant_head
        await _send_json(socket, _connected(principal, head, resume))
        if reset is not None:
            await _send_json(socket, {"type": "reset", "reason": reset})
        return sub, head
    await _send_json(socket, _connected(principal, pos.tenant_head, resume))
    last = await _replay(socket, api, tenant, resume)
    sub = api.hub.subscribe(tenant)
    try:
        last = await _replay(socket, api, tenant, last)
    except BaseException:
        api.hub.unsubscribe(sub)
        raise
    return sub, last


async def _replay(
    socket: WebSocket[Any, Any, Any], api: ApiState, tenant_id: int, after: int
) -> int:
    """Send the tenant's stored events after ``after``, page by page; return the last id."""
    while True:
        async with api.apool.connection() as aconn:
            page = await events.fetch_tenant_after(aconn, tenant_id, after, CATCHUP_PAGE)
        for event in page:
            await socket.send_text(event.message)
            after = event.event_id
        metrics.WS_CATCHUP_EVENTS.inc(len(page))
        metrics.WS_EVENTS_SENT.inc(len(page))
        if len(page) < CATCHUP_PAGE:
            return after


async def _stream(socket: WebSocket[Any, Any, Any], sub: Subscriber, last: int) -> None:
    """Send live events until the client leaves or overflows."""
    sender = asyncio.create_task(_pump(socket, sub, last))
    receiver = asyncio.create_task(_ignore_incoming(socket))
    done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
            await task
    if sender in done and isinstance(sender.exception(), Overflow):
        return  # _pump closed the socket
    for task in done:
        exc = task.exception()
        if exc is not None and not isinstance(exc, WebSocketDisconnect):
            raise exc


async def _pump(socket: WebSocket[Any, Any, Any], sub: Subscriber, last: int) -> None:
    try:
        while True:
            for event_id, message in await sub.take():
                if event_id <= last:
                    continue  # already sent by the catch-up
                await socket.send_text(message)
                last = event_id
                metrics.WS_EVENTS_SENT.inc()
    except Overflow:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                _send_json(socket, {"type": "overflow", "last_event_id": last}), 5.0
            )
        await _close(socket, CLOSE_OVERFLOW, "client too slow; reconnect with last_event_id")
        raise


async def _ignore_incoming(socket: WebSocket[Any, Any, Any]) -> None:
    while True:
        await socket.receive_data(mode="text")


def _connected(principal: Principal, head: int, resume: int | None) -> dict[str, Any]:
    return {
        "type": "connected",
        "tenant_id": principal.tenant_id,
        "role": principal.role,
        "subject": principal.subject,
        "last_event_id": head,
        "resumed_from": resume,
    }


def _offered_protocols(socket: WebSocket[Any, Any, Any]) -> list[str]:
    header = socket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def _token(socket: WebSocket[Any, Any, Any], offered: list[str]) -> str:
    for protocol in offered:
        if protocol.startswith(TOKEN_PREFIX):
            return protocol[len(TOKEN_PREFIX) :]
    token = socket.query_params.get("token")
    if not token:
        raise Unauthorized("no token (use the bearer.<token> sub-protocol or ?token=)")
    return str(token)


async def _send_json(socket: WebSocket[Any, Any, Any], message: dict[str, Any]) -> None:
    await socket.send_text(json.dumps(message))


async def _close(socket: WebSocket[Any, Any, Any], code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(socket.close(code=code, reason=reason[:120]), 5.0)
