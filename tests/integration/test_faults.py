"""Fault tests: kill or restart the flow, the broker and PostgreSQL while traffic flows.

Afterwards every valid message must be stored exactly once: no loss, no duplicates.
(Dead letters carry the receipt time, so a redelivered invalid message may be recorded twice;
only valid data is held to exactly-once.)
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import psycopg
import pytest

from storage.migrate import migrate
from tests.integration.harness import (
    FlowProcess,
    PrivateBroker,
    PrivatePostgres,
    Publisher,
    process_gone,
    publish_in_background,
    wait_until,
)
from tests.integration.traffic import Traffic, duplicate_rows, seeded_traffic, stored_rows

pytestmark = [pytest.mark.integration, pytest.mark.fault]

COUNT = 6000
RATE = 1500.0  # msg/s: about four seconds of traffic


def assert_exactly_once(url: str, traffic: Traffic, flow: FlowProcess) -> None:
    expected = traffic.expected_rows()

    def complete() -> bool:
        rows = stored_rows(url)
        return all(rows[t] >= n for t, n in expected.items())

    wait_until(complete, 240, f"all valid messages stored; flow log:\n{flow.output()}")
    time.sleep(1.0)  # anything still in flight would show up as a duplicate now
    rows = stored_rows(url)
    assert {t: rows[t] for t in expected} == expected
    assert duplicate_rows(url) == 0
    assert rows["dead_letters"] >= traffic.invalid


def wait_subscribed(flow: FlowProcess, times: int = 1) -> None:
    wait_until(lambda: flow.output().count("connected to") >= times, 60, "the flow to (re)connect")


def stream_with_fault(url: str, broker: PrivateBroker, fault: Callable[[FlowProcess], None]) -> str:
    """Publish simulated traffic while ``fault`` runs, then check exactly-once; the flow log."""
    traffic = seeded_traffic(url, count=COUNT, malformed=0.02)
    flow = FlowProcess(url, broker.port).start()
    try:
        wait_subscribed(flow)
        publisher = Publisher(broker.port)
        sender = publish_in_background(publisher, traffic.pairs(), RATE)
        fault(flow)
        sender.join()
        publisher.wait_all(timeout=180)
        publisher.close()
        assert flow.alive(), flow.output()
        assert_exactly_once(url, traffic, flow)
        return flow.output()
    finally:
        flow.stop()
        flow.drop_sessions(broker.port)


def test_flow_killed_twice_mid_stream(migrated_db: str, private_broker: PrivateBroker) -> None:
    def kill_twice(flow: FlowProcess) -> None:
        for _ in range(2):
            time.sleep(1.3)
            lanes = flow.lane_pids()
            flow.kill()  # SIGKILL mid-stream: unacknowledged messages stay with the broker
            # The priority lane does not outlive the flow that started it.
            wait_until(lambda old=lanes: all(map(process_gone, old)), 10, "the old lane to exit")
            flow.start()

    stream_with_fault(migrated_db, private_broker, kill_twice)


def test_priority_lane_killed_twice_mid_stream(
    migrated_db: str, private_broker: PrivateBroker
) -> None:
    """The flow starts its priority lane again; panics in flight are redelivered to the lane
    (or stored by the bulk partition while the lane is down), each stored once."""

    def kill_lane_twice(flow: FlowProcess) -> None:
        for n in range(1, 3):
            wait_until(lambda n=n: len(flow.lane_pids()) >= n, 30, "a priority lane")
            time.sleep(1.0)
            os.kill(flow.lane_pids()[-1], signal.SIGKILL)
            wait_until(lambda n=n: len(flow.lane_pids()) > n, 30, "the lane to be started again")

    log = stream_with_fault(migrated_db, private_broker, kill_lane_twice)
    assert log.count("priority lane exited") >= 2


def test_broker_restarted_mid_stream(migrated_db: str, private_broker: PrivateBroker) -> None:
    def restart_broker(_flow: FlowProcess) -> None:
        time.sleep(1.5)
        private_broker.restart(down_for=2.0)

    log = stream_with_fault(migrated_db, private_broker, restart_broker)
    assert log.count("connected to") >= 2  # it reconnected by itself


def test_postgres_restarted_mid_stream(private_broker: PrivateBroker) -> None:
    pg = PrivatePostgres().start()
    try:
        url = pg.create_database()
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)

        def restart_postgres(_flow: FlowProcess) -> None:
            time.sleep(1.5)
            pg.restart(down_for=3.0)

        log = stream_with_fault(url, private_broker, restart_postgres)
        assert "database unavailable" in log  # it really saw the outage
    finally:
        pg.close()
