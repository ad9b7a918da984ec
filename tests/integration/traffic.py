"""Simulated traffic for the integration tests (the same simulator `noc simulate` uses)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from simulator.scenario import ScenarioConfig, SimMessage
from storage.registry_seed import seed_registry

# Where each valid kind is stored.
TABLE_OF_KIND = {
    "gps": "positions",
    "telemetry": "telemetry",
    "sensor": "sensor_readings",
    "alert": "device_alerts",
    "health": "system_health",
}


@dataclass
class Traffic:
    messages: list[SimMessage]

    @property
    def valid(self) -> int:
        return sum(m.valid for m in self.messages)

    @property
    def invalid(self) -> int:
        return len(self.messages) - self.valid

    def expected_rows(self) -> dict[str, int]:
        counts = Counter(TABLE_OF_KIND[m.kind] for m in self.messages if m.valid)
        return {table: counts.get(table, 0) for table in TABLE_OF_KIND.values()}

    def pairs(self) -> list[tuple[str, bytes]]:
        return [(m.topic, m.payload) for m in self.messages]


def seeded_traffic(
    database_url: str, count: int, seed: int = 7, malformed: float = 0.05, guards: int = 40
) -> Traffic:
    """Seed the registry of a scenario into the database and return ``count`` messages."""
    scenario = ScenarioConfig(seed=seed, guards=guards, malformed=malformed).build()
    with psycopg.connect(database_url, autocommit=True) as conn:
        seed_registry(conn, scenario.registry)
    start = datetime.now(UTC).replace(microsecond=0)
    return Traffic(list(scenario.messages(start=start, rate=1000.0, count=count)))


def stored_rows(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in (*TABLE_OF_KIND.values(), "dead_letters")
        }


def duplicate_rows(database_url: str) -> int:
    """Rows whose message identity appears more than once (must be 0)."""
    with psycopg.connect(database_url) as conn:
        total = 0
        for table in TABLE_OF_KIND.values():
            row = conn.execute(f"SELECT count(*) - count(DISTINCT msg_id) FROM {table}").fetchone()
            total += int(row[0]) if row else 0
        return total
