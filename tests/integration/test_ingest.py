"""The ingest flow end to end: real Mosquitto, real flow process, real TimescaleDB."""

from __future__ import annotations

import pytest

from tests.integration.harness import Publisher, running_flow, wait_until
from tests.integration.traffic import duplicate_rows, seeded_traffic, stored_rows

pytestmark = pytest.mark.integration


def test_10k_mixed_messages_are_stored_exactly_once(
    migrated_db: str, mqtt_broker: tuple[str, int]
) -> None:
    _host, port = mqtt_broker
    traffic = seeded_traffic(migrated_db, count=10_000, malformed=0.05)
    assert traffic.invalid > 300  # the mix really contains malformed messages
    with running_flow(migrated_db, port) as flow:
        wait_until(lambda: "connected to" in flow.output(), 60, "the flow to subscribe")
        publisher = Publisher(port)
        publisher.publish(traffic.pairs())
        publisher.wait_all()
        publisher.close()

        def all_stored() -> bool:
            rows = stored_rows(migrated_db)
            return sum(rows.values()) >= len(traffic.messages)

        wait_until(all_stored, 180, "every message to be stored")
    rows = stored_rows(migrated_db)
    expected = traffic.expected_rows()
    assert {t: rows[t] for t in expected} == expected
    assert rows["dead_letters"] == traffic.invalid
    assert duplicate_rows(migrated_db) == 0
