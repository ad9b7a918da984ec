"""Analyst rollups: refresh and app-driven retention on every edition (docs/analytics.md).

Migration 0006 creates ``device_health_hourly`` and ``guard_activity_hourly`` as continuous
aggregates on the community edition and as plain tables of the same columns elsewhere, and
``alerts_daily`` as a plain view everywhere. :func:`refresh` brings the hourly rollups up to
date for a recent window: ``refresh_continuous_aggregate`` on the community edition (whose
policies do the same in the background), the upsert function ``noc_refresh_rollups`` on the
Apache edition and bare PostgreSQL. :func:`apply_retention` drops raw rows older than
``analytics_retention`` says: ``drop_chunks`` with TimescaleDB, ``DELETE`` without.

The refresh window never starts before the raw-data retention horizon: re-aggregating a range
whose raw rows were dropped would erase its rollups on the community edition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from storage.edition import Edition, detect
from storage.errors import StorageError

ROLLUPS = ("device_health_hourly", "guard_activity_hourly")
VIEWS = (*ROLLUPS, "alerts_daily")
DEFAULT_LOOKBACK = timedelta(days=3)  # = the community refresh policy's start_offset
_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class RefreshReport:
    """What :func:`refresh` did."""

    edition: Edition
    window_start: datetime  # rollup buckets from here on were recomputed
    clamped: bool  # the requested start was older than the retention horizon
    rollups: tuple[str, ...]
    rows_written: int | None  # rollup rows upserted; None for continuous aggregates


@dataclass(frozen=True)
class RetentionRule:
    """One row of ``analytics_retention``."""

    table: str
    time_column: str
    drop_after: timedelta


@dataclass(frozen=True)
class RetentionResult:
    """What :func:`apply_retention` removed from one table."""

    table: str
    cutoff: datetime
    removed: int
    unit: str  # "chunks" (TimescaleDB) or "rows" (bare PostgreSQL)


def retention_rules(conn: psycopg.Connection) -> list[RetentionRule]:
    """The raw-data retention of this database (from migration 0006)."""
    try:
        present = conn.execute("SELECT to_regclass('analytics_retention') IS NOT NULL").fetchone()
        if not present or not present[0]:
            raise StorageError("analytics are not installed: run `noc db migrate` first")
        rows = conn.execute(
            "SELECT hypertable, time_column, drop_after FROM analytics_retention ORDER BY 1"
        ).fetchall()
    except psycopg.Error as exc:
        raise StorageError(f"cannot read analytics_retention: {_first_line(exc)}") from exc
    return [RetentionRule(str(t), str(c), d) for t, c, d in rows]


def refresh(
    conn: psycopg.Connection,
    *,
    lookback: timedelta = DEFAULT_LOOKBACK,
    now: datetime | None = None,
) -> RefreshReport:
    """Recompute the hourly rollups from ``now - lookback`` on. Needs an autocommit connection."""
    if not conn.autocommit:
        raise StorageError("refresh() needs an autocommit connection")
    if lookback <= timedelta(0):
        raise StorageError(f"lookback must be positive, not {lookback}")
    now = now or datetime.now(UTC)
    rules = retention_rules(conn)
    start = now - lookback
    clamped = False
    if rules:
        horizon = now - min(r.drop_after for r in rules)
        if start < horizon:
            # The first whole hour after the horizon: its raw rows are all still there.
            start, clamped = _ceil_hour(horizon), True
    edition = detect(conn).edition
    try:
        if edition == Edition.COMMUNITY:
            for name in ROLLUPS:
                conn.execute(
                    "CALL refresh_continuous_aggregate(%s::regclass, %s, NULL)", (name, start)
                )
            return RefreshReport(edition, start, clamped, ROLLUPS, None)
        row = conn.execute("SELECT noc_refresh_rollups(%s, NULL)", (start,)).fetchone()
    except psycopg.Error as exc:
        raise StorageError(f"refreshing the rollups failed: {_first_line(exc)}") from exc
    return RefreshReport(edition, start, clamped, ROLLUPS, int(row[0]) if row else 0)


def apply_retention(
    conn: psycopg.Connection, *, now: datetime | None = None
) -> list[RetentionResult]:
    """Drop raw rows older than their retention now (the community edition's policies do the
    same on their schedule). Rollups keep their aggregates."""
    now = now or datetime.now(UTC)
    rules = retention_rules(conn)
    has_chunks = detect(conn).edition != Edition.NONE
    results: list[RetentionResult] = []
    try:
        for rule in rules:
            cutoff = now - rule.drop_after
            if has_chunks:
                # Whole chunks that end before the cutoff, as the retention policy does.
                row = conn.execute(
                    "SELECT count(*) FROM drop_chunks(%s::regclass, older_than => %s)",
                    (rule.table, cutoff),
                ).fetchone()
                results.append(
                    RetentionResult(rule.table, cutoff, int(row[0]) if row else 0, "chunks")
                )
            else:
                cur = conn.execute(
                    sql.SQL("DELETE FROM {} WHERE {} < %s").format(
                        sql.Identifier(rule.table), sql.Identifier(rule.time_column)
                    ),
                    (cutoff,),
                )
                results.append(RetentionResult(rule.table, cutoff, cur.rowcount, "rows"))
    except psycopg.Error as exc:
        raise StorageError(f"applying retention failed: {_first_line(exc)}") from exc
    return results


def _ceil_hour(t: datetime) -> datetime:
    t = t.astimezone(UTC)
    floor = t.replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + _HOUR


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
