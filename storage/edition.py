"""Detect what the server offers: TimescaleDB community, Apache-2 edition, or bare PostgreSQL."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import psycopg


class Edition(enum.StrEnum):
    """What the database can do; the schema uses the best available."""

    COMMUNITY = "community"  # timescaledb.license = timescale: caggs, compression, policies
    APACHE = "apache"  # hypertables and time_bucket only
    NONE = "none"  # plain PostgreSQL tables


@dataclass(frozen=True)
class ServerInfo:
    """What :func:`detect` found."""

    edition: Edition
    server_version: str
    timescaledb_version: str | None
    extension_available: bool


def detect(conn: psycopg.Connection) -> ServerInfo:
    """Inspect the server; read-only and cheap."""
    server_version = str(_scalar(conn, "SHOW server_version"))
    available = _scalar(
        conn, "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    installed = _scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    if installed is None:
        return ServerInfo(Edition.NONE, server_version, None, bool(available))
    license_ = _scalar(conn, "SELECT current_setting('timescaledb.license', true)")
    edition = Edition.APACHE if license_ == "apache" else Edition.COMMUNITY
    return ServerInfo(edition, server_version, str(installed), True)


def _scalar(conn: psycopg.Connection, query: str) -> object:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]
