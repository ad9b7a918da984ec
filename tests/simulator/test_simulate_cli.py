"""`noc simulate` as a user runs it: a real process, the shared Mosquitto, a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from simulator.scenario import ScenarioConfig
from tests.integration.harness import free_port, wait_until
from tests.simulator.test_publisher import Collector

ROOT = Path(__file__).resolve().parents[2]


def run_noc(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NOC_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "noc", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


@pytest.mark.integration
def test_simulate_seeds_the_registry_and_publishes_everything(
    migrated_db: str, mqtt_broker: tuple[str, int]
) -> None:
    host, port = mqtt_broker
    # A fixed start (an hour ago, so the pipeline's clock-skew check would accept it) makes the
    # traffic predictable: the test computes it too and looks for exactly these messages
    # among whatever else is on the shared broker.
    start = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    expected = list(
        ScenarioConfig(seed=5, malformed=0.05).build().messages(start, 1000.0, count=200)
    )
    sub = Collector(port)
    try:
        result = run_noc(
            "simulate", "--count", "200", "--rate", "1000", "--seed", "5",
            "--malformed", "0.05", "--start", start.isoformat(),
            env={
                "NOC_DATABASE_URL": migrated_db,
                "NOC_MQTT_HOST": host,
                "NOC_MQTT_PORT": str(port),
            },
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        wait_until(lambda: sub.has_all(expected), 30, "all 200 messages at the subscriber")
    finally:
        sub.close()
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("registry seeded in ")
    valid = sum(m.valid for m in expected)
    assert f"published 200 messages ({valid} valid, {200 - valid} malformed)" in lines[-1]
    assert "at QoS 1" in lines[-1]
    assert sum(not m.valid for m in expected) > 0

    reg = ScenarioConfig(seed=5, malformed=0.05).build().registry
    with psycopg.connect(migrated_db) as conn:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id > 0").fetchone()[0]  # type: ignore[index]
            for table in ("tenants", "sites", "zones", "guards", "guard_zones", "devices")
        }
        recipients = conn.execute("SELECT channel, apprise_url FROM recipients").fetchall()
    assert counts == {k: v for k, v in reg.counts().items() if k != "recipients"}
    assert {c for c, _ in recipients} == {"sms", "email", "push"}
    assert {u for _, u in recipients} == {"json://127.0.0.1:8025/notify"}


@pytest.mark.integration
def test_unmigrated_database_is_one_line(empty_db: str) -> None:
    result = run_noc("simulate", "--count", "5", env={"NOC_DATABASE_URL": empty_db})
    assert result.returncode == 2
    assert result.stderr.strip() == "noc: error: database is not migrated: run `noc db migrate`"
    assert result.stdout == ""


@pytest.mark.integration
def test_unreachable_broker_is_one_line() -> None:
    port = free_port()
    result = run_noc(
        "simulate", "--count", "5", "--no-seed-registry", env={"NOC_MQTT_PORT": str(port)}
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"noc: error: cannot connect to MQTT broker 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("--malformed", "2"), "malformed"),
        (("--guards", "0"), "guards"),
        (("--rate", "0"), "rate"),
        (("--count", "-1"), "count"),
        (("--start", "2026-01-01T00:00:00"), "timezone-aware"),
    ],
)
def test_bad_options_are_one_line(args: tuple[str, ...], names: str) -> None:
    result = run_noc("simulate", "--no-seed-registry", *args, env={})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0]
