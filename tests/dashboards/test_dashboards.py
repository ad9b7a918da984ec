"""The Grafana dashboard and the Prometheus rules, checked by promtool and by a real Prometheus.

There is no Grafana here (DESIGN §5), so the dashboard is tested through what it consists
of: its PromQL. A real Prometheus scrapes a real flow (with its priority lane), ``noc api``
and ``noc notify`` while simulated traffic flows; every panel query must run, the panels of
what that traffic exercises must show data, and every alert rule must evaluate cleanly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.api.process import ApiProcess
from tests.integration.harness import (
    ROOT,
    FlowProcess,
    PrivateBroker,
    Publisher,
    free_port,
    wait_until,
)
from tests.integration.traffic import seeded_traffic, stored_rows

DASHBOARDS = ROOT / "dashboards"
DASHBOARD = json.loads((DASHBOARDS / "noc-stream.json").read_text())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
QUERIES = [(p["title"], t["expr"]) for p in PANELS for t in p["targets"]]

# Panels that the traffic below must fill (the others need faults, notifications or alerts
# decided by time, and are only required to run).
FILLED = {
    "Processes up", "MQTT sessions connected", "Messages received", "Rows stored",
    "Dead letters", "Unacknowledged messages", "Storage commit time p99", "Storage queue",
    "Duplicates skipped", "Priority copies paired", "Alert occurrences", "Late readings",
    "Outbox pending", "Escalations (1 h)", "WebSocket clients", "Events to WebSocket clients",
    "Slow clients disconnected", "HTTP p95 by route", "Event listener",
}  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_rules_and_scrape_config_pass_promtool() -> None:
    rules = promtool("check", "rules", str(DASHBOARDS / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 8 rules found" in rules.stdout
    config = promtool("check", "config", str(DASHBOARDS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_dashboard_is_laid_out_on_grafanas_grid() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in DASHBOARD["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
    for p in PANELS:
        assert p["datasource"]["uid"] == "prometheus" and p["targets"], p["title"]
    assert set(FILLED) <= {p["title"] for p in PANELS}


class Prometheus:
    """``prometheus`` scraping the given jobs every second, with the project's rules."""

    def __init__(self, targets: dict[str, int]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="noc-prometheus-"))
        config: dict[str, Any] = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(DASHBOARDS / "alerts.yml")]
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)
        self.log.close()


def start_notifier(database_url: str, metrics_port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOC_")}
    env.update(NOC_DATABASE_URL=database_url, NOC_NOTIFY_METRICS_PORT=str(metrics_port))
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "noc", "notify"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


@pytest.mark.integration
def test_every_panel_query_runs_against_the_real_processes(
    migrated_db: str, private_broker: PrivateBroker, tmp_path: Path
) -> None:
    traffic = seeded_traffic(migrated_db, count=1500, malformed=0.05)
    ports = {job: free_port() for job in ("noc_flow", "noc_priority", "noc_notify")}
    flow = FlowProcess(migrated_db, private_broker.port)
    flow.env.update(
        NOC_FLOW_METRICS_PORT=str(ports["noc_flow"]),
        NOC_PRIORITY_METRICS_PORT=str(ports["noc_priority"]),
    )
    api = ApiProcess(migrated_db, "dashboards-test-secret-0123456789abcdef")
    notifier = start_notifier(migrated_db, ports["noc_notify"], tmp_path / "notify.log")
    prometheus: Prometheus | None = None
    try:
        flow.start()
        api.start()
        wait_until(lambda: flow.output().count("connected to") >= 2, 60, "both sessions")
        prometheus = Prometheus({**ports, "noc_api": api.port})
        wait_until(prometheus.ready, 30, "prometheus to start")
        publisher = Publisher(private_broker.port)
        publisher.publish(traffic.pairs(), rate=1000.0)
        publisher.wait_all(60)
        publisher.close()
        expected = traffic.expected_rows()
        wait_until(
            lambda: all(stored_rows(migrated_db)[t] >= n for t, n in expected.items()),
            60,
            "the traffic to be stored",
        )
        for _ in range(3):  # API requests for the HTTP panels
            httpx.get(f"{api.url}/healthz", timeout=5)
        p = prometheus

        def all_up() -> bool:
            targets = p.api("targets")["activeTargets"]
            return len(targets) == 4 and all(t["health"] == "up" for t in targets)

        wait_until(all_up, 30, "every target to be scraped")
        time.sleep(5)  # a few more scrapes: rate() needs two samples in its range

        empty = []
        for title, expr in QUERIES:
            data = p.api("query", query=expr)  # a query Prometheus cannot run fails here
            if title in FILLED and not data["result"]:
                empty.append(f"{title}: {expr}")
        assert empty == [], "panels without data:\n" + "\n".join(empty)

        groups = p.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 8
        assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
        firing = {a["labels"]["alertname"] for a in p.api("alerts")["alerts"]}
        assert "NocProcessDown" not in firing and "NocMqttSessionDisconnected" not in firing
    finally:
        if prometheus is not None:
            prometheus.close()
        notifier.terminate()
        notifier.wait(15)
        api.stop()
        flow.stop()
        flow.drop_sessions(private_broker.port)
