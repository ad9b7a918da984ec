"""What the lifespan opens and the handlers share (``app.state.noc``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool, ConnectionPool

from api.hub import EventHub
from noc.settings import Settings


@dataclass(frozen=True)
class ApiState:
    """Settings and connections of one running app.

    ``pool`` (sync, autocommit) serves the REST handlers, which run in worker threads and use
    the synchronous storage functions; ``apool`` (async) serves token checks, WebSocket
    catch-up and retention; ``hub`` owns the LISTEN connection.
    """

    settings: Settings
    pool: ConnectionPool[Any]
    apool: AsyncConnectionPool[Any]
    hub: EventHub
