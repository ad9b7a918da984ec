"""The `noc` command as a user runs it: real process, real database."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_noc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NOC_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "noc", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"NOC_DATABASE_URL": "nonsense"}, "NOC_DATABASE_URL"),
        ({"NOC_MQTT_PORT": "x"}, "NOC_MQTT_PORT"),
        ({"NOC_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}, "127.0.0.1:1"),
    ],
)
def test_bad_setting_is_one_line_without_traceback(env: dict[str, str], names: str) -> None:
    result = run_noc("db", "status", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("noc: error: ")
    assert names in lines[0]
    assert "Traceback" not in result.stderr


def test_migrate_then_status(empty_db: str) -> None:
    env = {"NOC_DATABASE_URL": empty_db}
    first = run_noc("db", "migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_registry" in first.stdout
    second = run_noc("db", "migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    st = run_noc("db", "status", env=env)
    assert st.returncode == 0, st.stderr
    assert "schema version:" in st.stdout
    assert "edition:         apache" in st.stdout or "edition:         community" in st.stdout
    assert "telemetry" in st.stdout


def test_config_lists_settings() -> None:
    result = run_noc("config")
    assert result.returncode == 0
    assert "NOC_DATABASE_URL" in result.stdout
