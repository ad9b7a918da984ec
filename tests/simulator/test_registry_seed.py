"""Seeding the registry with the simulated estate (storage/registry_seed.py) on a real database.

These live next to the simulator's tests because the simulator is what produces the seeds.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import psycopg
import pytest

from simulator.scenario import ScenarioConfig
from storage.registry_seed import (
    RegistrySeed,
    SchemaNotMigrated,
    SeedError,
    ZoneSeed,
    check_loopback_url,
    check_migrated,
    example_recipients,
    seed_registry,
)

TABLES = {
    "tenants": "SELECT * FROM tenants WHERE tenant_id > 0 ORDER BY tenant_id",
    "sites": "SELECT * FROM sites ORDER BY site_id",
    "zones": "SELECT zone_id, tenant_id, site_id, name, geometry, center_lat, center_lon, "
    "radius_m, windows, active FROM zones ORDER BY zone_id",
    "guards": "SELECT * FROM guards ORDER BY guard_id",
    "guard_zones": "SELECT * FROM guard_zones ORDER BY guard_id, zone_id",
    "devices": "SELECT device_id, tenant_id, site_id, guard_id, kind, reporting_interval_s "
    "FROM devices ORDER BY device_id",
    "recipients": "SELECT tenant_id, name, channel, apprise_url, tier, active FROM recipients "
    "ORDER BY tenant_id, name, channel",
}


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {name: conn.execute(q).fetchall() for name, q in TABLES.items()}


def registry(seed: int = 1, **kwargs: Any) -> RegistrySeed:
    return ScenarioConfig(seed=seed, **kwargs).build().registry


@pytest.mark.integration
def test_seed_is_complete_and_idempotent(migrated_db: str) -> None:
    reg = registry()
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        seed_registry(conn, reg)
        first = snapshot(conn)
        version = conn.execute("SELECT version FROM registry_version").fetchone()
        seed_registry(conn, reg)
        assert snapshot(conn) == first
        counts = {name: len(rows) for name, rows in first.items()}
        assert counts == reg.counts()
        # A second, identical seed rewrites nothing, but the version still moves on
        # (statement triggers): the flow reloads, harmlessly.
        assert conn.execute("SELECT version FROM registry_version").fetchone() >= version  # type: ignore[operator]
        polygons = conn.execute(
            "SELECT geometry FROM zones WHERE geometry IS NOT NULL ORDER BY zone_id"
        ).fetchall()
        assert polygons
        for (geom,) in polygons:
            assert geom["type"] == "Polygon"
            ring = geom["coordinates"][0]
            assert ring[0] == ring[-1] and len(ring) >= 5
        circles = conn.execute(
            "SELECT count(*) FROM zones WHERE radius_m IS NOT NULL AND center_lat IS NOT NULL"
        ).fetchone()
        assert circles is not None
        channels = conn.execute(
            "SELECT tenant_id, array_agg(DISTINCT channel ORDER BY channel) FROM recipients "
            "GROUP BY tenant_id ORDER BY tenant_id"
        ).fetchall()
        assert channels == [(1, ["email", "push", "sms"]), (2, ["email", "push", "sms"])]


@pytest.mark.integration
def test_reseeding_another_estate_converges_to_it(migrated_db: str) -> None:
    """Names embed the ids, so a different seed over the same ids never collides."""
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        seed_registry(conn, registry(1))
        other = registry(2, guards=12)
        seed_registry(conn, other)
        rows = snapshot(conn)
        assert [r[0] for r in rows["zones"]][: len(other.zones)] == [z.zone_id for z in other.zones]
        approvals = {(r[1], r[2]) for r in rows["guard_zones"]}  # (tenant, guard, zone)
        expected = {(g.guard_id, z) for g in other.guards for z in g.zone_ids}
        old_guards = {g.guard_id for g in registry(1).guards} - {g.guard_id for g in other.guards}
        assert {p for p in approvals if p[0] not in old_guards} == expected
        names = {r[0]: r[3] for r in rows["zones"]}
        assert all(names[z.zone_id] == z.name for z in other.zones)


@pytest.mark.integration
def test_notify_url_is_used_for_example_recipients(migrated_db: str) -> None:
    reg = registry()
    reg = replace(reg, recipients=())
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        seed_registry(conn, reg, notify_url="json://localhost:9999/capture")
        urls = {r[0] for r in conn.execute("SELECT DISTINCT apprise_url FROM recipients")}
        assert urls == {"json://localhost:9999/capture"}
        seed_registry(conn, reg, notify_url="json://127.0.0.1:8025/notify")
        urls = {r[0] for r in conn.execute("SELECT DISTINCT apprise_url FROM recipients")}
        assert urls == {"json://127.0.0.1:8025/notify"}
        n = conn.execute("SELECT count(*) FROM recipients").fetchone()
        assert n == (len(example_recipients(reg.tenants)),)


@pytest.mark.integration
def test_seed_inside_a_caller_transaction_rolls_back_with_it(migrated_db: str) -> None:
    with psycopg.connect(migrated_db) as conn:
        conn.execute("SELECT 1")  # a transaction is open
        seed_registry(conn, registry())
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM guards").fetchone() == (0,)


@pytest.mark.integration
def test_unmigrated_database_is_reported(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        with pytest.raises(SchemaNotMigrated, match="run `noc db migrate`"):
            check_migrated(conn)
        with pytest.raises(SchemaNotMigrated):
            seed_registry(conn, registry())


@pytest.mark.integration
def test_conflicting_existing_row_is_one_line(migrated_db: str) -> None:
    reg = registry()
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenants (tenant_id, name) VALUES (77, %s)", (reg.tenants[0].name,)
        )
        with pytest.raises(SeedError, match="cannot seed the registry") as info:
            seed_registry(conn, reg)
        assert "\n" not in str(info.value)
        assert conn.execute("SELECT count(*) FROM sites").fetchone() == (0,)  # all or nothing


@pytest.mark.parametrize(
    "url",
    [
        "json://127.0.0.1:8025/notify",
        "json://localhost/x",
        "form://127.0.0.2:80/",
        "json://[::1]:8025/",
    ],
)
def test_loopback_urls_are_accepted(url: str) -> None:
    check_loopback_url(url)


@pytest.mark.parametrize(
    "url", ["json://example.com/notify", "mailto://user:pw@gmail.com", "json://10.0.0.1/", "x"]
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(SeedError, match="loopback"):
        check_loopback_url(url)


def test_inconsistent_descriptions_are_refused_before_any_sql() -> None:
    reg = registry()
    bad_zone = replace(reg.zones[0], tenant_id=2 if reg.zones[0].tenant_id == 1 else 1)
    with pytest.raises(SeedError, match="zone"):
        seed_registry(None, replace(reg, zones=(bad_zone, *reg.zones[1:])))  # type: ignore[arg-type]
    with pytest.raises(SeedError, match="system tenant"):
        seed_registry(None, replace(reg, tenants=(replace(reg.tenants[0], tenant_id=0),)))  # type: ignore[arg-type]
    with pytest.raises(SeedError, match="either a ring or a circle"):
        ZoneSeed(1, 1, 1, "z", ring=None, radius_m=None)
