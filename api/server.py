"""Serving the app with uvicorn: in the foreground (``noc api``) or in a background thread.

Both check the database first (reachable, schema migrated) so that a misconfiguration is one
clear line, not a lifespan traceback. Access logs are off: the request metrics count
requests, and a URL may carry a token (``/?token=``).
"""

from __future__ import annotations

import logging
import re
import threading
import time

import uvicorn

from api.app import create_app
from api.errors import ApiError
from noc.settings import Settings
from storage.db import connect, redact

log = logging.getLogger(__name__)


_TOKEN_IN_URL = re.compile(r"(token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    """Masks ``token=...`` in log records (uvicorn logs WebSocket URLs with their query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_URL.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN_IN_URL.sub(r"\1***", record.msg)
        return True


class ServerError(ApiError):
    """The API could not start (database not ready, port taken, ...)."""


def check_database(settings: Settings) -> None:
    """Raise a one-line NocError unless the database is reachable and migrated."""
    with connect(settings.database.url, autocommit=True, application_name="noc-api-check") as c:
        row = c.execute("SELECT to_regclass('ws_events') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise ServerError(
            f"database {redact(settings.database.url)} is not migrated; run `noc db migrate`"
        )


def build_server(
    settings: Settings, host: str | None = None, port: int | None = None
) -> uvicorn.Server:
    """A uvicorn server for ``create_app(settings)`` (not started)."""
    config = uvicorn.Config(
        create_app(settings),
        host=host or settings.api.host,
        port=settings.api.port if port is None else port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
    return uvicorn.Server(config)


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Run in the foreground until SIGINT/SIGTERM; return the exit status."""
    check_database(settings)
    if len(settings.api.token_secret.encode()) < 32:
        log.warning("NOC_TOKEN_SECRET is shorter than 32 bytes; set a long random value")
    server = build_server(settings, host, port)
    server.run()
    if not server.started:
        raise ServerError("the API did not start (see the log above)")
    return 0


class ApiServer:
    """The API in a background thread of this process: for supervisors and tests.

    ``start()`` returns once the server accepts connections (or raises ServerError);
    ``stop()`` shuts it down gracefully (open WebSockets are closed with 1012).
    """

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = build_server(settings, host, port)
        self._thread = threading.Thread(target=self.server.run, name="noc-api", daemon=True)
        self._settings = settings

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        servers = getattr(self.server, "servers", [])
        for s in servers:
            for sock in s.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> ApiServer:
        check_database(self._settings)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise ServerError("the API did not start (see the log)")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"the API did not start within {timeout:g}s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
