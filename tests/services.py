"""Where the real services of the test suite live (provisioned by scripts/provision.sh).

A missing service is a test failure, never a skip: these helpers raise with a message that
says to run `make provision`.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_COMMUNITY_URL = "postgresql://postgres:postgres@127.0.0.1:5499/postgres?sslmode=disable"
MQTT_HOST = "127.0.0.1"
MQTT_PORT = 1883


def require_port(host: str, port: int, what: str) -> None:
    """Fail (not skip) when a provisioned service is not listening."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        raise RuntimeError(
            f"{what} is not reachable on {host}:{port} ({exc}); run `make provision`"
        ) from exc


def url_for(admin_url: str, dbname: str) -> str:
    """The admin URL pointed at another database."""
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{dbname}"


@contextmanager
def scratch_database(admin_url: str = PG_ADMIN_URL, prefix: str = "noc_test") -> Iterator[str]:
    """Create an empty database, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_for(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def community_connection(prefix: str = "noc_test") -> Iterator[psycopg.Connection]:
    """A connection to the community-edition test server (PGlite + TimescaleDB), working in a
    fresh schema that is dropped afterwards.

    That server has one database and one backend shared by every client, and it ignores the
    ``options`` startup parameter: the search path is set on the connection and the session
    settings are restored on the way out. Prepared statements are off (they would outlive the
    connection in the shared backend).
    """
    require_port("127.0.0.1", 5499, "the community-edition TimescaleDB test server")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_COMMUNITY_URL, autocommit=True, prepare_threshold=None) as conn:
        saved = conn.execute(
            "SELECT current_setting('search_path'), current_setting('timezone')"
        ).fetchone()
        assert saved is not None
        conn.execute(f'CREATE SCHEMA "{name}"')
        conn.execute("SELECT set_config('search_path', %s, false)", (f'"{name}", public',))
        try:
            yield conn
        finally:
            conn.execute(
                "SELECT set_config('search_path', %s, false), set_config('timezone', %s, false)",
                saved,
            )
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
