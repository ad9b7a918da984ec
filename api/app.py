"""The Litestar app factory: routes, auth, dependencies, error mapping and lifespan in one place.

``create_app(settings)`` builds the app without touching the network; the lifespan (run by the
ASGI server) opens the connection pools and the event hub's LISTEN connection, starts the
event-retention task, and closes everything on shutdown. Serve it with :mod:`api.server`
(``noc api``) or any ASGI server.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from api import metrics
from api import ws as ws_module
from api.auth import TokenAuthMiddleware
from api.controllers import (
    AlertController,
    DeviceController,
    GuardController,
    SystemController,
    ZoneController,
)
from api.controllers.system import STATIC_DIR
from api.dependencies import DEPENDENCIES
from api.errors import EXCEPTION_HANDLERS
from api.hub import EventHub
from api.state import ApiState
from api.ws import event_socket_handler
from noc.settings import Settings
from storage import events

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 300.0
"""How often old WebSocket events are deleted."""

PUBLIC_PATHS = ["^/$", "^/static/", "^/schema", "^/metrics$", "^/healthz$"]

SCHEMA_ASSETS = "/schema/assets"
"""Where Swagger UI's files are served from: the ``swagger-ui-py`` package's copy, so the
schema viewer needs nothing from outside the NOC's network."""


def _swagger_dir() -> Path:
    """The static files of the installed ``swagger-ui-py`` (found without importing it)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (a dependency of noc-stream)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _schema_viewer() -> SwaggerRenderPlugin:
    return SwaggerRenderPlugin(
        js_url=f"{SCHEMA_ASSETS}/swagger-ui-bundle.js",
        css_url=f"{SCHEMA_ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{SCHEMA_ASSETS}/swagger-ui-standalone-preset.js",
        path="/",
        favicon="",  # Litestar's default favicon is fetched from a CDN
    )


DESCRIPTION = (
    "REST under `/api`: send `Authorization: Bearer <token>` (issued by `noc token`); every "
    "request is scoped to the token's tenant. Roles: `analyst` reads, `operator` also acts on "
    'alerts, `admin` also edits zones. Errors are `{"error": code, "detail": text}`.\n\n'
    "## Event WebSocket\n" + (ws_module.__doc__ or "").split("\n", 1)[1]
)


def create_app(settings: Settings, *, retention_every_s: float = RETENTION_EVERY_S) -> Litestar:
    """The NOC API for ``settings`` (nothing is connected until the lifespan starts)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with _open_state(settings) as state:
            app.state.noc = state
            retention = asyncio.create_task(
                _retention(state, retention_every_s), name="noc-ws-retention"
            )
            try:
                yield
            finally:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention

    auth = DefineMiddleware(
        TokenAuthMiddleware,
        exclude=[*PUBLIC_PATHS, f"^{re.escape(settings.api.ws_path)}$"],
    )
    return Litestar(
        route_handlers=[
            SystemController,
            AlertController,
            GuardController,
            ZoneController,
            DeviceController,
            event_socket_handler(settings.api.ws_path),
            create_static_files_router("/static", directories=[STATIC_DIR], name="static"),
            create_static_files_router(
                SCHEMA_ASSETS, directories=[_swagger_dir()], name="schema-assets"
            ),
        ],
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[metrics.request_metrics, auth],
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="NOC Stream API",
            version="1",
            description=DESCRIPTION,
            path="/schema",
            render_plugins=[_schema_viewer()],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
                }
            ),
            security=[{"bearer": []}],
        ),
    )


@contextlib.asynccontextmanager
async def _open_state(settings: Settings) -> AsyncIterator[ApiState]:
    url = settings.database.url
    size = settings.database.pool_size
    kwargs: dict[str, Any] = {"autocommit": True, "application_name": "noc-api"}
    pool: ConnectionPool[Any] = ConnectionPool(
        url, min_size=1, max_size=size, kwargs=kwargs, open=False, name="noc-api"
    )
    apool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url, min_size=1, max_size=size, kwargs=kwargs, open=False, name="noc-api-async"
    )
    hub = EventHub(url, settings.api.ws_queue_limit)
    await asyncio.to_thread(pool.open, True, 10.0)
    try:
        await apool.open(wait=True, timeout=10.0)
        try:
            await hub.start()
            try:
                yield ApiState(settings, pool, apool, hub)
            finally:
                await hub.stop()
        finally:
            await apool.close()
    finally:
        await asyncio.to_thread(pool.close)


async def _retention(state: ApiState, every_s: float) -> None:
    """Delete events older than the retention period, every ``every_s`` seconds."""
    max_age = timedelta(hours=state.settings.api.ws_retention_hours)
    while True:
        try:
            async with state.apool.connection() as aconn:
                deleted = await events.delete_expired(aconn, max_age)
            metrics.EVENTS_DELETED.inc(deleted)
            if deleted:
                log.info("deleted %d WebSocket events older than %s", deleted, max_age)
        except Exception as exc:  # keep the task alive; the next run retries
            log.warning("event retention failed: %s", exc)
        await asyncio.sleep(every_s)
