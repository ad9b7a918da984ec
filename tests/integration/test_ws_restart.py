"""Resume across an API restart: `noc api` is stopped and started again while events are being
written; a client that reconnects with its last event id misses nothing and sees nothing twice."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from api.auth import issue_token
from operators.records import Enriched, Position
from storage.tokens import record_token
from storage.writer import BatchWriter
from tests.api.process import ApiProcess

pytestmark = pytest.mark.integration

SECRET = "restart-test-secret-0123456789abcdef01234"


def test_client_resumes_across_an_api_restart(migrated_db: str) -> None:
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme'), (2, 'globex')")
    token, record = issue_token(SECRET, 1, "operator", "night", timedelta(hours=1))
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        record_token(conn, record)

    stop = threading.Event()

    def write() -> None:
        writer = BatchWriter(migrated_db, application_name="restart-writer")
        i = 0
        while not stop.is_set():
            now = datetime.now(UTC)
            batch = [
                Enriched(Position(g, now, 12.97, 77.59, 3.0, None, f"p{i}-{g}", now),
                         tenant_id=1 + g % 2, guard_id=g)
                for g in (1, 2, 3)
            ]  # fmt: skip
            writer.write(batch)
            i += 1
            time.sleep(0.005)
        writer.close()

    api = ApiProcess(migrated_db, SECRET, NOC_LOG_LEVEL="WARNING").start()
    writer = threading.Thread(target=write)
    received: list[int] = []
    try:
        with connect(f"{api.url.replace('http', 'ws')}/ws?token={token}") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "connected"
            writer.start()
            while len(received) < 50:
                received.append(json.loads(ws.recv(timeout=10))["id"])
            api.stop()  # graceful: the server closes the socket (1012)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    received.append(json.loads(ws.recv(timeout=10))["id"])
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        time.sleep(1.0)  # events keep being written while the API is down
        api.start()
        with connect(
            f"{api.url.replace('http', 'ws')}/ws?token={token}&last_event_id={received[-1]}"
        ) as ws2:
            assert json.loads(ws2.recv(timeout=10))["resumed_from"] == received[-1]
            time.sleep(0.5)
            stop.set()
            writer.join(30)
            with psycopg.connect(migrated_db) as conn:
                final = conn.execute(
                    "SELECT max(event_id) FROM ws_events WHERE tenant_id = 1"
                ).fetchone()
            assert final is not None
            while received[-1] < final[0]:
                received.append(json.loads(ws2.recv(timeout=10))["id"])
    finally:
        stop.set()
        if writer.is_alive():
            writer.join(30)
        api.stop()
    with psycopg.connect(migrated_db) as conn:
        expected = [
            int(r[0])
            for r in conn.execute(
                "SELECT event_id FROM ws_events WHERE tenant_id = 1 ORDER BY event_id"
            ).fetchall()
        ]
    assert received == expected
    assert len(received) > 100
