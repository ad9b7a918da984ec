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
def community_schema(prefix: str = "noc_test") -> Iterator[str]:
    """A fresh schema on the community-edition test server (PGlite + TimescaleDB).

    That server has one database and serves one connection at a time, so tests isolate by
    schema: the yielded URL sets ``search_path`` to the new schema.
    """
    require_port("127.0.0.1", 5499, "the community-edition TimescaleDB test server")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_COMMUNITY_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{PG_COMMUNITY_URL}&options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(PG_COMMUNITY_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
