from __future__ import annotations

import psycopg
import pytest

from storage.edition import Edition, detect
from storage.errors import MigrationError
from storage.migrate import available_migrations, migrate, status

HYPERTABLES = {
    "alert_history",
    "dead_letters",
    "device_alerts",
    "notification_deliveries",
    "positions",
    "sensor_readings",
    "system_health",
    "telemetry",
}


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in available_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_migrate_empty_database_creates_hypertables(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        report = migrate(conn)
        assert report.version_before == 0
        assert report.version_after == available_migrations()[-1].version
        # make provision installs TimescaleDB (Apache edition at least) into the server.
        assert report.server.edition in (Edition.APACHE, Edition.COMMUNITY)
        rows = conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables"
        ).fetchall()
    assert {r[0] for r in rows} == HYPERTABLES


def test_migrating_twice_changes_nothing(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        migrate(conn)
        schema_before = _schema_fingerprint(conn)
        again = migrate(conn)
        assert again.applied == []
        assert _schema_fingerprint(conn) == schema_before


def test_older_schema_is_upgraded(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        first = migrate(conn, target=1)
        assert [m.version for m in first.applied] == [1]
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (7, 'acme')")
        rest = migrate(conn)
        assert [m.version for m in rest.applied] == [m.version for m in available_migrations()[1:]]
        assert conn.execute("SELECT name FROM tenants WHERE tenant_id = 7").fetchone() == ("acme",)
        st = status(conn)
        assert st.current_version == st.latest_version
        assert st.pending == []
        assert set(st.hypertables) == HYPERTABLES


def test_edited_migration_is_detected(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        migrate(conn)
        conn.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate(conn)


def test_newer_database_is_refused(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        migrate(conn)
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x')")
        with pytest.raises(MigrationError, match="newer than this code"):
            migrate(conn)


def test_bare_postgresql_gets_plain_tables(empty_db: str) -> None:
    """Without the extension in a database, the helper makes plain tables."""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert detect(conn).edition == Edition.NONE  # extension not created in this database
        conn.execute(available_migrations()[0].sql.encode())
        conn.execute("CREATE TABLE t (ts timestamptz NOT NULL)")
        made = conn.execute("SELECT noc_make_hypertable('t', 'ts', '1 day')").fetchone()
    assert made == ("plain table",)


def test_alert_history_is_append_only(migrated_db: str) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alert_history (ts, tenant_id, alert_id, action, actor)"
            " VALUES (now(), 0, 1, 'opened', 'test')"
        )
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE alert_history SET actor = 'someone else'")
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM alert_history")


def test_one_open_alert_per_source_and_type(migrated_db: str) -> None:
    insert = (
        "INSERT INTO alerts (tenant_id, source_id, alert_type, severity, first_seen, last_seen)"
        " VALUES (0, 'dev-1', 'panic', 'critical', now(), now())"
    )
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert)
        conn.execute("UPDATE alerts SET status = 'resolved'")
        conn.execute(insert)  # a closed alert does not block a new one


def _schema_fingerprint(conn: psycopg.Connection) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'public' ORDER BY 1, 2"
    ).fetchall()
