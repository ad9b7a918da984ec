"""Analyst rollups on every edition: the same names, columns and numbers (docs/analytics.md).

Backends: the community edition (PGlite test server: continuous aggregates and policies), the
Apache edition (shared PostgreSQL: rollup tables refreshed by the app) and bare PostgreSQL (a
database without the extension). The data set is small, deterministic and inserted with plain
parameterised INSERTs (PGlite crashes on COPY and pipelined executemany).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage.analytics import ROLLUPS, VIEWS, apply_retention, refresh, retention_rules
from storage.edition import Edition, detect
from storage.migrate import available_migrations, migrate
from tests.services import community_connection, scratch_database

BACKENDS = ["community", "apache", "bare"]
EARTH_M = 6371008.8

# The data set's first hour: a whole hour a day ago, inside the default refresh window and
# clear of the current (partial) hour.
H0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=26)
H1 = H0 + timedelta(hours=1)


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """An independent implementation of the distance the rollup must report."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_M * math.asin(math.sqrt(a))


# (seconds after H0, guard, lat, lon, zone status)
FIXES = [
    (0, 7, 12.970, 77.590, "inside"),
    (60, 7, 12.971, 77.590, "inside"),
    (120, 7, 12.972, 77.590, "outside"),  # outside for the 60 s until the next fix
    (180, 7, 12.973, 77.590, "unzoned"),
    (900, 7, 12.990, 77.590, "uncertain"),  # 720 s gap: not a walked step
    (3600, 7, 12.990, 77.600, "outside"),  # H1: the step from H0's last fix is not counted
    (3630, 7, 12.990, 77.601, "outside"),
    (3650, 7, 12.990, 77.601, "inside"),
    (30, 8, 12.900, 77.500, "unzoned"),
]
# (seconds after H0, device, battery, signal, temperature)
TELEMETRY = [
    (0, "d1", 90.0, -60.0, 20.0),
    (600, "d1", 88.0, -70.0, 22.0),
    (1200, "d1", 86.0, -80.0, 24.0),
    (3600, "d1", 80.0, -65.0, 21.0),
    (4200, "d1", 78.0, -75.0, 21.0),
    (100, "d2", 50.0, -90.0, None),
]
# (source, site, type, severity, status, seconds to acknowledge, seconds to close)
ALERTS = [
    ("btn-1", 10, "panic", "critical", "resolved", 60, 600),
    ("btn-2", 10, "panic", "critical", "false_alarm", 120, 900),
    ("btn-3", 10, "panic", "critical", "acknowledged", 300, None),
    ("gd-7", 11, "geofence", "high", "new", None, None),
]

STEP_NORTH = _haversine(12.970, 77.590, 12.971, 77.590)
STEP_EAST = _haversine(12.990, 77.600, 12.990, 77.601)

EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    # tenant, device, bucket, messages, battery min/avg/max, signal min/avg/max, temp min/avg/max
    "device_health_hourly": [
        (1, "d1", H0, 3, 86.0, 88.0, 90.0, -80.0, -70.0, -60.0, 20.0, 22.0, 24.0),
        (1, "d1", H1, 2, 78.0, 79.0, 80.0, -75.0, -70.0, -65.0, 21.0, 21.0, 21.0),
        (1, "d2", H0, 1, 50.0, 50.0, 50.0, -90.0, -90.0, -90.0, None, None, None),
    ],
    # tenant, guard, bucket, fixes, zoned, inside, outside, inside_share, distance_m, outside_s
    "guard_activity_hourly": [
        (1, 7, H0, 5, 4, 2, 1, 0.5, STEP_NORTH * 3, 60.0),
        (1, 7, H1, 3, 3, 1, 2, 1 / 3, STEP_EAST, 50.0),
        (1, 8, H0, 1, 0, 0, 0, None, 0.0, 0.0),
    ],
    # tenant, day, site, type, severity, alerts, acknowledged, closed, false alarms,
    # ack mean/p90 s, close mean/p90 s (p90 interpolates: 120 + 0.8 * 180, 600 + 0.9 * 300)
    "alerts_daily": [
        (1, H0.date(), 10, "panic", "critical", 3, 3, 2, 1, 160.0, 264.0, 750.0, 870.0),
        (1, H0.date(), 11, "geofence", "high", 1, 0, 0, 0, None, None, None, None),
    ],
}
ORDER = {
    "device_health_hourly": "tenant_id, device_id, bucket",
    "guard_activity_hourly": "tenant_id, guard_id, bucket",
    "alerts_daily": "tenant_id, day, site_id, alert_type, severity",
}


# ----------------------------------------------------------------------------- backends


@contextmanager
def _community() -> Iterator[psycopg.Connection]:
    with community_connection() as conn:
        migrate(conn)
        yield conn


@contextmanager
def _apache() -> Iterator[psycopg.Connection]:
    with scratch_database() as url, psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        yield conn


@contextmanager
def _bare() -> Iterator[psycopg.Connection]:
    # migrate() creates the extension where the server offers it; apply the files directly.
    with scratch_database() as url, psycopg.connect(url, autocommit=True) as conn:
        for migration in available_migrations():
            conn.execute(migration.sql.encode())
        yield conn


OPEN = {"community": _community, "apache": _apache, "bare": _bare}
EDITION = {"community": Edition.COMMUNITY, "apache": Edition.APACHE, "bare": Edition.NONE}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, psycopg.Connection]]:
    name = str(request.param)
    with OPEN[name]() as conn:
        yield name, conn


# ----------------------------------------------------------------------------- data


def _insert_data_set(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme')")
    conn.execute(
        "INSERT INTO sites (site_id, tenant_id, name) VALUES (10, 1, 'HQ'), (11, 1, 'Depot')"
    )
    conn.execute(
        "INSERT INTO guards (guard_id, tenant_id, name) VALUES (7, 1, 'Asha'), (8, 1, 'Ben')"
    )
    conn.execute(
        "INSERT INTO devices (device_id, tenant_id, kind) VALUES ('d1', 1, 'gateway'), ('d2', 1, 'sensor')"
    )
    for i, (s, guard, lat, lon, status) in enumerate(FIXES):
        conn.execute(
            "INSERT INTO positions (ts, tenant_id, guard_id, lat, lon, zone_status, msg_id,"
            " received_at) VALUES (%s, 1, %s, %s, %s, %s, %s, %s)",
            (H0 + timedelta(seconds=s), guard, lat, lon, status, f"p{i}", H0),
        )
    for i, (s, device, battery, signal, temperature) in enumerate(TELEMETRY):
        conn.execute(
            "INSERT INTO telemetry (ts, tenant_id, device_id, battery, signal, temperature,"
            " msg_id, received_at) VALUES (%s, 1, %s, %s, %s, %s, %s, %s)",
            (H0 + timedelta(seconds=s), device, battery, signal, temperature, f"t{i}", H0),
        )
    for i, (source, site, kind, severity, status, ack_s, close_s) in enumerate(ALERTS):
        first = H0 + timedelta(minutes=10 + i)
        conn.execute(
            "INSERT INTO alerts (tenant_id, source_id, alert_type, severity, status, site_id,"
            " first_seen, last_seen, acknowledged_at, closed_at)"
            " VALUES (1, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                source, kind, severity, status, site, first, first,
                None if ack_s is None else first + timedelta(seconds=ack_s),
                None if close_s is None else first + timedelta(seconds=close_s),
            ),
        )  # fmt: skip


def _rows(conn: psycopg.Connection, view: str) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT * FROM {view} ORDER BY {ORDER[view]}").fetchall()


def _same(actual: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> bool:
    """Equal row by row; floats to 1e-9 relative (the servers' libm may differ in the last bit)."""
    if len(actual) != len(expected):
        return False
    for a_row, e_row in zip(actual, expected, strict=True):
        if len(a_row) != len(e_row):
            return False
        for a, e in zip(a_row, e_row, strict=True):
            if isinstance(e, float) and isinstance(a, float):
                if not math.isclose(a, e, rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif a != e:
                return False
    return True


def _all_views(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {view: _rows(conn, view) for view in VIEWS}


# ----------------------------------------------------------------------------- tests


def test_rollups_give_the_expected_numbers(backend: tuple[str, psycopg.Connection]) -> None:
    name, conn = backend
    assert detect(conn).edition == EDITION[name]
    _insert_data_set(conn)
    report = refresh(conn)
    assert report.edition == EDITION[name]
    assert report.rollups == ROLLUPS
    assert not report.clamped
    for view, expected in EXPECTED.items():
        rows = _rows(conn, view)
        assert _same(rows, expected), f"{view} on {name}:\n{rows}\n!=\n{expected}"
    # Refreshing again changes nothing; so does a redelivered (duplicate) fix.
    conn.execute(
        "INSERT INTO positions (ts, tenant_id, guard_id, lat, lon, zone_status, msg_id,"
        " received_at) VALUES (%s, 1, 7, 0, 0, 'inside', 'p0', now()) ON CONFLICT DO NOTHING",
        (H0,),
    )
    refresh(conn)
    assert _same(_rows(conn, "guard_activity_hourly"), EXPECTED["guard_activity_hourly"])
    if name == "community":
        # The numbers were materialized, not only computed at query time (real-time).
        for view in ROLLUPS:
            conn.execute(
                f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.materialized_only = true)"
            )
            assert _same(_rows(conn, view), EXPECTED[view]), view


def test_late_rows_are_picked_up_by_the_next_refresh(
    backend: tuple[str, psycopg.Connection],
) -> None:
    _, conn = backend
    _insert_data_set(conn)
    refresh(conn)
    conn.execute(
        "INSERT INTO telemetry (ts, tenant_id, device_id, battery, signal, temperature, msg_id,"
        " received_at) VALUES (%s, 1, 'd2', 40, -90, 30, 'late', now())",
        (H0 + timedelta(minutes=50),),
    )
    refresh(conn)
    d2 = [r for r in _rows(conn, "device_health_hourly") if r[1] == "d2"]
    assert _same(d2, [(1, "d2", H0, 2, 40.0, 45.0, 50.0, -90.0, -90.0, -90.0, 30.0, 30.0, 30.0)])


def test_rollups_outlive_raw_retention(backend: tuple[str, psycopg.Connection]) -> None:
    name, conn = backend
    conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme')")
    old = H0 - timedelta(days=100)
    conn.execute(
        "INSERT INTO telemetry (ts, tenant_id, device_id, battery, msg_id, received_at)"
        " VALUES (%s, 1, 'd1', 42, 'old', %s), (%s, 1, 'd1', 99, 'new', %s)",
        (old, old, H0, H0),
    )
    # As if refreshed back then, when the row was recent.
    refresh(conn, lookback=timedelta(days=1), now=old + timedelta(hours=2))
    refresh(conn)
    removed = {r.table: r.removed for r in apply_retention(conn)}
    assert removed["telemetry"] >= 1, removed
    assert conn.execute("SELECT msg_id FROM telemetry").fetchall() == [("new",)]
    # A long look-back is clamped to the retention horizon instead of re-aggregating (and, on
    # the community edition, erasing) the old bucket.
    report = refresh(conn, lookback=timedelta(days=365))
    assert report.clamped
    assert report.window_start > old
    rows = conn.execute(
        "SELECT bucket, messages, battery_avg FROM device_health_hourly ORDER BY bucket"
    ).fetchall()
    assert rows == [(old.replace(minute=0), 1, 42.0), (H0, 1, 99.0)], name


def test_same_numbers_on_every_edition() -> None:
    """The cross-check: one data set, every backend, identical rows in every view."""
    results: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    for name in BACKENDS:  # one after another: the PGlite server takes one connection at a time
        with OPEN[name]() as conn:
            _insert_data_set(conn)
            refresh(conn)
            results[name] = _all_views(conn)
    reference = results["community"]
    for name, views in results.items():
        for view in VIEWS:
            assert reference[view], view
            assert _same(views[view], reference[view]), f"{view}: {name} != community"
            columns = len(reference[view][0])
            assert all(len(r) == columns for r in views[view])


def test_view_columns_are_the_same_on_every_edition() -> None:
    columns: dict[str, list[tuple[str, str, str]]] = {}
    for name in BACKENDS:
        with OPEN[name]() as conn:
            columns[name] = [
                (str(t), str(c), str(d))
                for t, c, d in conn.execute(
                    "SELECT table_name, column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = ANY(%s)"
                    " ORDER BY table_name, ordinal_position",
                    (list(VIEWS),),
                ).fetchall()
            ]
    assert {t for t, _, _ in columns["community"]} == set(VIEWS)
    assert columns["apache"] == columns["community"]
    assert columns["bare"] == columns["community"]


def test_community_edition_has_policies_and_they_run() -> None:
    with _community() as conn:
        caggs = conn.execute(
            "SELECT view_name, materialized_only"
            " FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = current_schema() ORDER BY 1"
        ).fetchall()
        assert [c[0] for c in caggs] == list(ROLLUPS)
        assert not any(c[1] for c in caggs)  # real-time
        # Policies on a continuous aggregate are listed under the view's schema and name.
        jobs = conn.execute(
            "SELECT job_id, proc_name, hypertable_name, config FROM timescaledb_information.jobs"
            " WHERE hypertable_schema = current_schema()"
        ).fetchall()
        by_kind: dict[str, dict[str, dict[str, Any]]] = {}
        job_ids: dict[tuple[str, str], int] = {}
        for job_id, proc, table, config in jobs:
            by_kind.setdefault(str(proc), {})[str(table)] = dict(config)
            job_ids[str(proc), str(table)] = int(job_id)
        refresh_jobs = by_kind["policy_refresh_continuous_aggregate"]
        assert set(refresh_jobs) == set(ROLLUPS)
        for config in refresh_jobs.values():
            assert config["start_offset"] == "3 days"
            assert config["end_offset"] == "01:00:00"
        assert {t: c["compress_after"] for t, c in by_kind["policy_compression"].items()} == {
            t: "7 days" for t in ("telemetry", "positions", "sensor_readings", "device_alerts")
        }
        assert {t: c["drop_after"] for t, c in by_kind["policy_retention"].items()} == {
            r.table: "90 days" for r in retention_rules(conn)
        }

        # Background workers do not run on PGlite: run the policies by hand.
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme')")
        week_old = H0 - timedelta(days=10)
        conn.execute(
            "INSERT INTO telemetry (ts, tenant_id, device_id, battery, msg_id, received_at)"
            " VALUES (%s, 1, 'd1', 42, 'a', %s), (%s, 1, 'd1', 99, 'b', %s)",
            (week_old, week_old, H0, H0),
        )
        conn.execute("CALL run_job(%s)", (job_ids["policy_compression", "telemetry"],))
        compressed = conn.execute(
            "SELECT range_start <= %s, is_compressed FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = 'telemetry'"
            " ORDER BY range_start",
            (week_old,),
        ).fetchall()
        assert compressed == [(True, True), (False, False)]
        # A redelivery into the compressed chunk is still stored once.
        conn.execute(
            "INSERT INTO telemetry (ts, tenant_id, device_id, battery, msg_id, received_at)"
            " VALUES (%s, 1, 'd1', 1, 'a', now()) ON CONFLICT DO NOTHING",
            (week_old,),
        )
        assert conn.execute("SELECT count(*) FROM telemetry").fetchone() == (2,)
        for view in ROLLUPS:
            conn.execute(
                "CALL run_job(%s)", (job_ids["policy_refresh_continuous_aggregate", view],)
            )
        # The policy materialized H0 (inside its 3-day window): visible with real-time off.
        conn.execute(
            "ALTER MATERIALIZED VIEW device_health_hourly"
            " SET (timescaledb.materialized_only = true)"
        )
        assert conn.execute("SELECT bucket, messages FROM device_health_hourly").fetchall() == [
            (H0, 1)
        ]


def _doc_examples() -> list[str]:
    text = (Path(__file__).parents[2] / "docs" / "analytics.md").read_text(encoding="utf-8")
    return re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)


def test_documented_examples_run(backend: tuple[str, psycopg.Connection]) -> None:
    name, conn = backend
    examples = _doc_examples()
    assert len(examples) >= 5
    _insert_data_set(conn)
    refresh(conn)
    answered = 0
    for sql_text in examples:
        cur = conn.cursor()
        cur.execute(sql_text.encode())
        rows: list[tuple[Any, ...]] = []
        while True:  # the last statement's rows (examples may start with SET)
            if cur.description is not None:
                rows = cur.fetchall()
            if not cur.nextset():
                break
        answered += bool(rows)
    # "Slowest sites last week" and the week's kilometres cover the data set at least.
    assert answered >= 2, name


def test_refresh_needs_the_analytics_migration(empty_db: str) -> None:
    from storage.errors import StorageError

    with psycopg.connect(empty_db, autocommit=True) as conn:
        migrate(conn, target=5)
        with pytest.raises(StorageError, match="noc db migrate"):
            refresh(conn)


def test_noc_db_refresh_command(migrated_db: str) -> None:
    from tests.noc.test_cli import run_noc

    with psycopg.connect(migrated_db, autocommit=True) as conn:
        _insert_data_set(conn)
    result = run_noc("db", "refresh", "--retention", env={"NOC_DATABASE_URL": migrated_db})
    assert result.returncode == 0, result.stderr
    assert "edition:  apache" in result.stdout
    assert "rollup rows written: 6" in result.stdout
    assert "retention telemetry: dropped 0 chunks" in result.stdout
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        assert _same(_rows(conn, "device_health_hourly"), EXPECTED["device_health_hourly"])
