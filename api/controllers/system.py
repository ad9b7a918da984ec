"""The NOC page, who-am-I, counters, health and metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from litestar import Controller, MediaType, Response, get
from litestar.response import File

from api import metrics
from api.dependencies import ApiDep, PoolDep, PrincipalDep
from storage import queries

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE_CSP = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none';"
    " base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Me:
    """The caller's token scope, and where the WebSocket is."""

    tenant_id: int
    role: str
    subject: str
    ws_path: str


@dataclass(frozen=True)
class Health:
    """``ok`` when the database answers and the event listener is up."""

    ok: bool
    database: bool
    event_listener: bool


class SystemController(Controller):
    tags = ("system",)

    @get("/", include_in_schema=False, media_type=MediaType.HTML)
    async def page(self) -> File:
        """The NOC page (public: it asks for a token itself). Same-origin resources only."""
        return File(
            STATIC_DIR / "index.html",
            content_disposition_type="inline",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    @get("/api/me", summary="The caller's tenant, role and subject")
    async def me(self, api: ApiDep, principal: PrincipalDep) -> Me:
        return Me(principal.tenant_id, principal.role, principal.subject, api.settings.api.ws_path)

    @get(
        "/api/summary",
        sync_to_thread=True,
        summary="Open alerts by severity, guards by zone status",
    )
    def summary(self, pool: PoolDep, principal: PrincipalDep) -> queries.Summary:
        with pool.connection() as conn:
            return queries.summary(conn, principal.tenant_id)

    @get("/healthz", summary="Liveness and readiness")
    async def health(self, api: ApiDep) -> Response[Health]:
        database = True
        try:
            async with api.apool.connection(timeout=2) as aconn:
                await aconn.execute("SELECT 1")
        except Exception:  # any failure means "not ready"
            database = False
        health = Health(database and api.hub.listening, database, api.hub.listening)
        return Response(health, status_code=200 if health.ok else 503)

    @get("/metrics", include_in_schema=False)
    async def metrics(self) -> Response[bytes]:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)
