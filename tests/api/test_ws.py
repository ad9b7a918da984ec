"""The event WebSocket against a real uvicorn server, a real database and a real client.

Covers: auth (query token, sub-protocol, refusals), resume (exactly the missed events, in
order, then live ones; also while events are being written), tenant isolation, reset,
alert updates from REST actions, and bounded queues for slow clients.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from api.auth import decode_token, issue_token
from operators.records import AlertCandidate, DeviceAlert, Enriched
from tests.api.conftest import SECRET, Api, loads, start_api


def open_ws(api: Api, token: str, last_event_id: int | None = None, **kw: Any) -> ClientConnection:
    url = f"{api.ws_url}?token={token}"
    if last_event_id is not None:
        url += f"&last_event_id={last_event_id}"
    return connect(url, open_timeout=10, **kw)


def recv(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return loads(ws.recv(timeout=timeout))


def events(ws: ClientConnection, n: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    out: list[dict[str, Any]] = []
    while len(out) < n:
        message = recv(ws, max(0.1, deadline - time.monotonic()))
        assert "id" in message, message
        out.append(message)
    return out


def nothing_more(ws: ClientConnection, wait: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        ws.recv(timeout=wait)


def close_code(ws: ClientConnection, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as info:
        while time.monotonic() < deadline:
            ws.recv(timeout=timeout)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


def sources(prefix: str, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"{prefix}-{tag}-{i}" for i in range(n)]


def test_connected_comes_first_and_is_scoped_to_the_token(api: Api) -> None:
    with open_ws(api, api.token(2, subject="gina")) as ws:
        hello = recv(ws)
        assert hello["type"] == "connected" and hello["tenant_id"] == 2
        assert hello["subject"] == "gina" and hello["resumed_from"] is None
        assert hello["last_event_id"] == (api.event_ids(2) or [0])[-1]


def test_token_in_the_subprotocol(api: Api) -> None:
    token = api.token(1)
    with connect(api.ws_url, subprotocols=["noc.v1", f"bearer.{token}"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "noc.v1"
        assert recv(ws)["tenant_id"] == 1


@pytest.mark.parametrize("case", ["missing", "garbage", "revoked", "unrecorded", "bad_last_id"])
def test_refused_sockets_get_a_close_code(api: Api, case: str) -> None:
    token = api.token(1)
    if case == "revoked":
        jti = decode_token(SECRET, token).token_id
        with psycopg.connect(api.db, autocommit=True) as conn:
            conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s", (jti,))
        url = f"{api.ws_url}?token={token}"
    elif case == "unrecorded":
        forged, _record = issue_token(SECRET, 1, "admin", "mallory", timedelta(hours=1))
        url = f"{api.ws_url}?token={forged}"
    else:
        url = {
            "missing": api.ws_url,
            "garbage": f"{api.ws_url}?token=abc.def.ghi",
            "bad_last_id": f"{api.ws_url}?token={token}&last_event_id=-5",
        }[case]
    with connect(url, open_timeout=10) as ws:
        assert close_code(ws) == (4400 if case == "bad_last_id" else 4401)


def test_resume_delivers_exactly_the_missed_events_then_live_ones(api: Api) -> None:
    token = api.token(1)
    with open_ws(api, token) as ws:
        assert recv(ws)["type"] == "connected"
        api.alerts(1, sources("before", 3))
        seen = events(ws, 3)
    last = seen[-1]["id"]

    missed_sources = sources("missed", 100)
    for chunk in range(0, 100, 25):  # four batches, with another tenant's events in between
        api.alerts(1, missed_sources[chunk : chunk + 25])
        api.alerts(2, sources("other", 5))
    expected = [i for i in api.event_ids(1) if i > last]
    assert len(expected) == 100

    with open_ws(api, token, last_event_id=last) as ws:
        hello = recv(ws)
        assert hello["type"] == "connected" and hello["resumed_from"] == last
        replay = events(ws, 100)
        assert [e["id"] for e in replay] == expected
        assert [e["data"]["source_id"] for e in replay] == missed_sources
        assert {e["type"] for e in replay} == {"alert"}
        assert {e["data"]["tenant_id"] for e in replay} == {1}
        nothing_more(ws)

        api.positions(1, [(1, 12.972, 77.595, "inside")])
        api.positions(1, [(2, 12.99, 77.61, "outside")])
        live = events(ws, 2)
        assert [e["type"] for e in live] == ["position", "position"]
        assert [e["data"]["guard_id"] for e in live] == [1, 2]
        assert live[0]["id"] > replay[-1]["id"]
        nothing_more(ws)


def test_resume_races_with_writes_without_gaps_or_duplicates(api: Api) -> None:
    token = api.token(1)
    start = (api.event_ids(1) or [0])[-1]
    stop = threading.Event()

    def write() -> None:
        from storage.writer import BatchWriter

        writer = BatchWriter(api.db, application_name="race-writer")
        i = 0
        while not stop.is_set() and i < 400:
            guard = 1 + i % 2
            api.positions(1, [(guard, 12.972 + i * 1e-6, 77.595, "inside")], writer=writer)
            i += 1
        writer.close()

    received: list[int] = []
    thread = threading.Thread(target=write)
    thread.start()
    try:
        last = start
        for _ in range(6):  # reconnect repeatedly while the writer is busy
            with open_ws(api, token, last_event_id=last) as ws:
                assert recv(ws)["type"] == "connected"
                deadline = time.monotonic() + 0.15
                while time.monotonic() < deadline:
                    try:
                        message = recv(ws, 0.05)
                    except TimeoutError:
                        continue
                    received.append(message["id"])
                    last = message["id"]
        thread.join(60)
        with open_ws(api, token, last_event_id=last) as ws:
            assert recv(ws)["type"] == "connected"
            final = api.event_ids(1)[-1]
            while last < final:
                last = recv(ws)["id"]
                received.append(last)
            nothing_more(ws)
    finally:
        stop.set()
        thread.join(60)
    assert received == [i for i in api.event_ids(1) if i > start]


def test_a_client_never_receives_another_tenants_events(api: Api) -> None:
    with open_ws(api, api.token(1)) as a, open_ws(api, api.token(2)) as b:
        assert recv(a)["tenant_id"] == 1 and recv(b)["tenant_id"] == 2
        api.alerts(1, sources("iso-a", 3))
        api.alerts(2, sources("iso-b", 4))
        api.positions(2, [(3, 48.856, 2.352, "inside")])
        api.alerts(1, sources("iso-a2", 2))
        got_a, got_b = events(a, 5), events(b, 5)
        nothing_more(a)
        nothing_more(b)
    ids_1, ids_2 = set(api.event_ids(1)), set(api.event_ids(2))
    assert {e["id"] for e in got_a} <= ids_1 and {e["id"] for e in got_b} <= ids_2
    assert all(e["data"]["source_id"].startswith("iso-a") for e in got_a)
    # resuming from the very beginning replays only the tenant's own history
    with open_ws(api, api.token(2), last_event_id=0) as b:
        assert recv(b)["type"] == "connected"
        history = events(b, len(ids_2))
        assert [e["id"] for e in history] == sorted(ids_2)
        nothing_more(b)


def test_unknown_last_event_id_gets_a_reset(api: Api) -> None:
    with open_ws(api, api.token(1), last_event_id=10**15) as ws:
        assert recv(ws)["type"] == "connected"
        reset = recv(ws)
        assert reset["type"] == "reset" and "newer than any event" in reset["reason"]
        api.alerts(1, sources("after-reset", 1))
        assert events(ws, 1)[0]["type"] == "alert"


def test_expired_events_get_a_reset(api: Api) -> None:
    with psycopg.connect(api.db, autocommit=True) as conn:
        conn.execute("UPDATE ws_events_retention SET deleted_through = 5")
    try:
        with open_ws(api, api.token(1), last_event_id=2) as ws:
            assert recv(ws)["type"] == "connected"
            assert "expired" in recv(ws)["reason"]
    finally:
        with psycopg.connect(api.db, autocommit=True) as conn:
            conn.execute("UPDATE ws_events_retention SET deleted_through = 0")


def test_rest_actions_are_pushed_as_alert_updates(api: Api) -> None:
    (alert_id,) = api.alerts(1, sources("pushed", 1))
    token = api.token(1, subject="pat")
    with open_ws(api, token) as ws:
        assert recv(ws)["type"] == "connected"
        r = httpx.post(
            f"{api.url}/api/alerts/{alert_id}/resolve",
            headers={"Authorization": f"Bearer {token}"},
            json={"note": "checked"},
        )
        assert r.status_code == 200
        (update,) = events(ws, 1)
    assert update["type"] == "alert_update"
    assert update["data"]["alert_id"] == alert_id
    assert update["data"]["status"] == "resolved" and update["data"]["closed_by"] == "pat"


@pytest.fixture
def small_queue_api(seeded_db: str) -> Iterator[Api]:
    running = start_api(seeded_db, NOC_WS_QUEUE_LIMIT="20")
    try:
        yield running
    finally:
        running.writer.close()
        running.server.stop()


def test_a_slow_client_overflows_without_slowing_the_others(small_queue_api: Api) -> None:
    api = small_queue_api
    token = api.token(1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", api.server.port))
    # no compression: 8 kB of "x" would shrink to nothing and fit in the socket buffers
    slow_url = f"{api.ws_url}?token={token}"
    with (
        connect(slow_url, sock=sock, max_size=None, max_queue=1, compression=None) as slow,
        open_ws(api, token, max_size=None, compression=None) as fast,
    ):
        head = recv(slow)["last_event_id"]
        assert recv(fast)["type"] == "connected"
        n, batch = 1200, 100
        names = sources("flood", n)
        big = "x" * 8000
        received: list[dict[str, Any]] = []

        def write() -> None:
            for i in range(0, n, batch):
                _alerts_with_message(api, names[i : i + batch], big)

        writer = threading.Thread(target=write)
        writer.start()
        received = events(fast, n, timeout=120)
        writer.join(60)
        assert [e["data"]["source_id"] for e in received] == names

        messages: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                messages.append(loads(slow.recv(timeout=30)))
        assert info.value.rcvd is not None and info.value.rcvd.code == 4429
        assert messages[-1]["type"] == "overflow"
        delivered = [m["id"] for m in messages if "id" in m]
        assert messages[-1]["last_event_id"] == (delivered[-1] if delivered else head)
        assert delivered == names_to_ids(api, names)[: len(delivered)]
        assert len(delivered) < n
    metrics = httpx.get(f"{api.url}/metrics").text
    line = next(
        x for x in metrics.splitlines() if x.startswith("noc_api_ws_overflow_disconnects_total")
    )
    assert float(line.split()[-1]) >= 1


def names_to_ids(api: Api, names: list[str]) -> list[int]:
    with psycopg.connect(api.db) as conn:
        rows = conn.execute(
            "SELECT event_id FROM ws_events WHERE payload->>'source_id' = ANY(%s) ORDER BY event_id",
            (names,),
        ).fetchall()
    return [int(r[0]) for r in rows]


def _alerts_with_message(api: Api, names: list[str], message: str) -> None:
    now = datetime.now(UTC)
    batch = []
    for name in names:
        record = DeviceAlert(name, "flood", now, "low", message, None, None, name, now)
        item = Enriched(record, tenant_id=1, device_id=name)
        item.alerts.append(AlertCandidate(1, name, "flood", "low", message, now, device_id=name))
        batch.append(item)
    api.writer.write(batch)


def test_live_events_survive_the_listener_losing_its_connection(api: Api) -> None:
    with open_ws(api, api.token(1)) as ws:
        assert recv(ws)["type"] == "connected"
        api.alerts(1, sources("before-cut", 2))
        before = events(ws, 2)
        with psycopg.connect(api.db, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database()"
                " AND application_name IN ('noc-api-listen', 'noc-api-fanout')"
            ).fetchone()
        assert killed == (2,)
        cut = sources("during-cut", 5)
        api.alerts(1, cut)  # committed while the hub is reconnecting
        after = events(ws, 5)
        assert [e["data"]["source_id"] for e in after] == cut
        assert after[0]["id"] > before[-1]["id"]
        nothing_more(ws)
    health = httpx.get(f"{api.url}/healthz").json()
    assert health["event_listener"] is True
