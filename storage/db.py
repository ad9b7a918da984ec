"""Connections: one place that opens them and translates driver errors."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg

from storage.errors import DatabaseUnavailable


def connect(
    url: str, *, autocommit: bool = False, application_name: str = "noc"
) -> psycopg.Connection:
    """Open a connection; raise DatabaseUnavailable (one line, URL without password) on failure."""
    try:
        return psycopg.connect(
            url, autocommit=autocommit, application_name=application_name, connect_timeout=5
        )
    except psycopg.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(f"cannot connect to {redact(url)}: {first_line}") from exc


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
