"""``/api/guards``: guards with latest position and zone status, and one guard's track."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from litestar import Controller, get
from litestar.params import FromPath, FromQuery, QueryParameter

from api.dependencies import PoolDep, PrincipalDep
from api.errors import BadRequest
from storage import queries

MAX_TRACK = 10_000


class GuardController(Controller):
    path = "/api/guards"
    tags = ("guards",)

    @get(sync_to_thread=True, summary="Guards with their latest position")
    def list_guards(self, pool: PoolDep, principal: PrincipalDep) -> list[queries.GuardView]:
        with pool.connection() as conn:
            return queries.list_guards(conn, principal.tenant_id)

    @get("/{guard_id:int}", sync_to_thread=True, summary="One guard")
    def get_guard(
        self, pool: PoolDep, principal: PrincipalDep, guard_id: FromPath[int]
    ) -> queries.GuardView:
        with pool.connection() as conn:
            return queries.get_guard(conn, principal.tenant_id, guard_id)

    @get(
        "/{guard_id:int}/track",
        sync_to_thread=True,
        summary="A guard's fixes in [since, until), oldest first (default: the last hour)",
    )
    def track(
        self,
        pool: PoolDep,
        principal: PrincipalDep,
        guard_id: FromPath[int],
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_TRACK)] = 5000,
    ) -> list[queries.TrackPoint]:
        end = _aware(until, "until") if until else datetime.now(UTC)
        start = _aware(since, "since") if since else end - timedelta(hours=1)
        if start >= end:
            raise BadRequest("since must be before until")
        with pool.connection() as conn:
            return queries.guard_track(conn, principal.tenant_id, guard_id, start, end, limit)


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise BadRequest(f"{name} must be ISO-8601 with a UTC offset")
    return value
