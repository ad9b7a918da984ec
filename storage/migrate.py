"""Versioned schema migrations.

Migrations are the numbered SQL files in ``storage/migrations`` (``NNNN_name.sql``). Each runs
in its own transaction under an advisory lock and is recorded in ``schema_migrations`` with a
checksum. Applying them to an empty or partly migrated database brings it to the latest version;
applying them again changes nothing. Before the first migration, the TimescaleDB extension is
created when the server offers it, so hypertables are used wherever possible.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from storage.edition import ServerInfo, detect
from storage.errors import MigrationError

_LOCK_KEY = 0x4E4F43  # "NOC": serialises concurrent migrators
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One schema version."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` did."""

    applied: list[Migration]
    version_before: int
    version_after: int
    server: ServerInfo
    created_extension: bool


def available_migrations() -> list[Migration]:
    """All migrations shipped with the code, in version order."""
    found: list[Migration] = []
    for entry in resources.files("storage.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration files must be numbered 0001.. without gaps: {versions}")
    return found


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    """Version -> checksum of the migrations recorded in the database (empty if none)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
    return {int(v): str(c) for v, c in rows}


def migrate(conn: psycopg.Connection, target: int | None = None) -> MigrationReport:
    """Apply pending migrations up to ``target`` (default: latest). Idempotent."""
    if not conn.autocommit:
        raise MigrationError("migrate() needs an autocommit connection")
    migrations = available_migrations()
    if target is not None:
        migrations = [m for m in migrations if m.version <= target]
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            created = _ensure_extension(conn)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = applied_versions(conn)
            before = max(done, default=0)
            _check_known(done)
            applied: list[Migration] = []
            for migration in migrations:
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())  # the file is trusted, shipped code
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                        # Never a server-side prepared statement: the PGlite test server
                        # shares one backend among all clients, so it would outlive us.
                        prepare=False,
                    )
                applied.append(migration)
            after = max([before, *(m.version for m in applied)])
            return MigrationReport(applied, before, after, detect(conn), created)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    except psycopg.Error as exc:
        raise MigrationError(f"migration failed: {str(exc).strip().splitlines()[0]}") from exc


def _ensure_extension(conn: psycopg.Connection) -> bool:
    info = detect(conn)
    if info.timescaledb_version is None and info.extension_available:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return True
    return False


def _check_known(done: dict[int, str]) -> None:
    shipped = {m.version: m for m in available_migrations()}
    for version, checksum in done.items():
        if version not in shipped:
            raise MigrationError(
                f"database has schema version {version}, newer than this code knows; "
                "upgrade the code"
            )
        if shipped[version].checksum != checksum:
            raise MigrationError(
                f"migration {version:04d} was changed after it was applied (checksum mismatch); "
                "add a new migration instead"
            )


@dataclass(frozen=True)
class SchemaStatus:
    """What `noc db status` prints."""

    server: ServerInfo
    current_version: int
    latest_version: int
    pending: list[Migration]
    hypertables: list[str]


def status(conn: psycopg.Connection) -> SchemaStatus:
    """Read-only summary of schema version, edition and hypertables."""
    done = applied_versions(conn)
    migrations = available_migrations()
    server = detect(conn)
    hypertables: list[str] = []
    if server.timescaledb_version is not None:
        rows = conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = current_schema() ORDER BY 1"
        ).fetchall()
        hypertables = [str(r[0]) for r in rows]
    return SchemaStatus(
        server=server,
        current_version=max(done, default=0),
        latest_version=migrations[-1].version if migrations else 0,
        pending=[m for m in migrations if m.version not in done],
        hypertables=hypertables,
    )
