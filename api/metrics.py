"""Prometheus metrics of the API process, served at ``/metrics`` (the default registry).

Metrics are module-level (one set per process, shared by every app the process builds).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from litestar.enums import ScopeType
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "noc_api_requests_total",
    "HTTP requests by method, route template and status",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "noc_api_request_duration_seconds",
    "HTTP request duration by route template",
    ["method", "route"],
)
WS_CONNECTIONS = Gauge("noc_api_ws_connections", "Open, authenticated WebSocket connections")
WS_EVENTS_SENT = Counter("noc_api_ws_events_sent_total", "Events sent to WebSocket clients")
WS_CATCHUP_EVENTS = Counter(
    "noc_api_ws_catchup_events_total", "Events replayed from the database to resuming clients"
)
WS_OVERFLOWS = Counter(
    "noc_api_ws_overflow_disconnects_total", "WebSocket clients closed because they fell behind"
)
WS_REJECTED = Counter("noc_api_ws_rejected_total", "WebSocket connections refused", ["reason"])
LISTENER_UP = Gauge("noc_api_event_listener_up", "1 while the LISTEN connection is up")
FETCH_SECONDS = Histogram(
    "noc_api_event_fetch_seconds",
    "Time to read newly committed events after a notification",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
EVENTS_DELETED = Counter("noc_api_ws_events_deleted_total", "Events deleted by retention")


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric in the default registry, and its content type."""
    return _generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def request_metrics(app: ASGIApp) -> ASGIApp:
    """ASGI middleware counting HTTP requests by route template (not raw path)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            route = scope.get("path_template") or "unmatched"
            method = scope.get("method", "")
            REQUESTS.labels(method, route, str(status)).inc()
            REQUEST_SECONDS.labels(method, route).observe(time.perf_counter() - started)

    return middleware
