"""Test support for notifications: a loopback capture server, a settable clock, seeding."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import psycopg
from psycopg import sql

from operators.records import AlertCandidate, Enriched, Telemetry
from storage.migrate import migrate
from tests.services import scratch_database


@dataclass(frozen=True)
class Captured:
    """One notification as the endpoint received it."""

    path: str
    title: str
    message: str


class CaptureServer:
    """A real HTTP server on 127.0.0.1 recording what Apprise ``json://``/``form://`` posts.

    ``delay_s`` holds every response (the body is recorded first, as a real endpoint would
    have it); ``fail(path, n)`` answers the next ``n`` requests to ``path`` with HTTP 500.
    """

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.received: list[Captured] = []
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    doc: dict[str, Any] = json.loads(raw)
                else:
                    doc = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                with server._lock:
                    failing = server._failures.get(self.path, 0)
                    if failing:
                        server._failures[self.path] = failing - 1
                    else:
                        server.received.append(
                            Captured(self.path, doc.get("title", ""), doc.get("message", ""))
                        )
                if server.delay_s and not failing:
                    time.sleep(server.delay_s)
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str, scheme: str = "json") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def fail(self, path: str, times: int) -> None:
        with self._lock:
            self._failures[f"/{path}"] = times

    def at(self, path: str) -> list[Captured]:
        with self._lock:
            return [c for c in self.received if c.path == f"/{path}"]

    def snapshot(self) -> list[Captured]:
        with self._lock:
            return list(self.received)


class Clock:
    """An injected ``now``: starts at the real time (rows stamped by the database's now()
    are then due) and moves only when told."""

    def __init__(self, start: datetime | None = None) -> None:
        self.t = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **delta: float) -> datetime:
        self.t += timedelta(**delta)
        return self.t


def add_tenant(url: str, tenant_id: int = 1, name: str | None = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenants (tenant_id, name) VALUES (%s, %s)",
            (tenant_id, name or f"tenant-{tenant_id}"),
        )


def add_recipients(
    url: str, rows: Iterable[tuple[str, str, str, int]], tenant_id: int = 1, active: bool = True
) -> dict[str, int]:
    """(name, channel, apprise_url, tier) rows -> {name: recipient_id}."""
    ids: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, channel, apprise_url, tier in rows:
            row = conn.execute(
                "INSERT INTO recipients (tenant_id, name, channel, apprise_url, tier, active)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING recipient_id",
                (tenant_id, name, channel, apprise_url, tier, active),
            ).fetchone()
            assert row is not None
            ids[name] = int(row[0])
    return ids


T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def alarm(
    i: int,
    source: str = "pb-1",
    alert_type: str = "panic",
    severity: str = "critical",
    tenant_id: int = 1,
) -> Enriched:
    """A new message from ``source`` (message id ``i``) carrying one alert candidate."""
    ts = T0 + timedelta(milliseconds=i)
    item = Enriched(
        Telemetry(source, ts, 80.0, -60.0, 25.0, f"{source}-{i}", ts),
        tenant_id=tenant_id,
        device_id=source,
    )
    message = f"{alert_type} from {source}"
    item.alerts.append(
        AlertCandidate(tenant_id, source, alert_type, severity, message, ts, device_id=source)
    )
    return item


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def wait_for(predicate: Any, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def migrated_scratch(admin_url: str) -> Iterator[str]:
    """A migrated scratch database for a module's tests (see :func:`reset`)."""
    with scratch_database(admin_url) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        yield url


def reset(url: str, tenants: Iterable[int] = (1, 2)) -> str:
    """Empty every table (as freshly migrated), then add ``tenants``."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename NOT IN ('schema_migrations', 'registry_version')"
            )
        ]
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(map(sql.Identifier, tables))
            )
        )
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (0, 'system')")
    for tenant_id in tenants:
        add_tenant(url, tenant_id)
    return url
