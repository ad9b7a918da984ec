"""`noc zones import` / `noc zones list` as an engineer runs them."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tests.noc.test_cli import run_noc

SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[77.59, 12.97], [77.60, 12.97], [77.60, 12.98], [77.59, 12.98], [77.59, 12.97]]
    ],
}


def collection(*features: dict[str, object]) -> dict[str, object]:
    return {"type": "FeatureCollection", "features": list(features)}


def test_import_then_list(migrated_db: str, tmp_path: Path) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme')")
        conn.execute("INSERT INTO sites (site_id, tenant_id, name) VALUES (3, 1, 'hq')")
        conn.execute(
            "INSERT INTO guards (guard_id, tenant_id, site_id, name) VALUES (9, 1, 3, 'g')"
        )
    path = tmp_path / "zones.geojson"
    path.write_text(
        json.dumps(
            collection(
                {"type": "Feature", "geometry": SQUARE,
                 "properties": {"zone_id": 11, "site_id": 3, "name": "yard", "guards": [9]}},
                {"type": "Feature", "geometry": {"type": "Point", "coordinates": [77.6, 12.97]},
                 "properties": {"zone_id": 12, "name": "gate", "radius_m": 40,
                                "windows": [{"start": "22:00", "end": "06:00"}]}},
            )
        )
    )  # fmt: skip
    env = {"NOC_DATABASE_URL": migrated_db}
    first = run_noc("zones", "import", str(path), "--tenant", "1", env=env)
    assert first.returncode == 0, first.stderr
    assert "2 new, 0 updated, 1 guard approval" in first.stdout
    again = run_noc("zones", "import", str(path), "--tenant", "1", env=env)
    assert "0 new, 2 updated, 0 guard approval" in again.stdout
    listing = run_noc("zones", "list", "--tenant", "1", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "yard" in listing.stdout and "circle 40 m" in listing.stdout


def test_a_bad_zone_is_one_line_naming_the_feature(migrated_db: str, tmp_path: Path) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme')")
    bad = {"type": "Polygon", "coordinates": [[[77.59, 12.97], [77.60, 12.97], [77.59, 12.97]]]}
    path = tmp_path / "bad.geojson"
    path.write_text(
        json.dumps(collection({"type": "Feature", "geometry": bad, "properties": {"zone_id": 1}}))
    )
    result = run_noc(
        "zones", "import", str(path), "--tenant", "1", env={"NOC_DATABASE_URL": migrated_db}
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("noc: error: feature 0:"), result.stderr
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("SELECT count(*) FROM zones").fetchone() == (0,)
