"""Windows through the real flow, broker and database: offline, trends, man-down, restarts.

Time is injected, not waited for: heartbeat devices report every second (registry) and go
offline after two silent intervals (``NOC_OFFLINE_INTERVALS=2``); trends and man-down are
decided in event time, so the simulated traffic replays half an hour of readings in a burst
with past timestamps, and the lateness is half a second (``NOC_WINDOW_LATENESS_S``).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.integration.harness import FlowProcess, PrivateBroker, Publisher, wait_until

pytestmark = pytest.mark.integration

LAT0, LON0 = 12.9716, 77.5946
M_LAT = 111_320.0
M_LON = 111_320.0 * math.cos(math.radians(LAT0))
Message = tuple[str, bytes]


def seed(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme')")
        conn.execute("INSERT INTO sites (site_id, tenant_id, name) VALUES (1, 1, 'hq')")
        conn.execute(
            "INSERT INTO guards (guard_id, tenant_id, site_id, name) VALUES (1, 1, 1, 'ana')"
        )
        devices = [
            # (device, guard, kind, reporting interval s)
            ("gd-1", 1, "guard_device", 3600),  # trends and man-down; never silent long enough
            ("temp-1", None, "sensor", 3600),
            ("temp-2", None, "sensor", 3600),
            ("hb-1", None, "panic_button", 1),  # heartbeat: offline after 2 s of silence
            ("hb-2", None, "sensor", 1),
        ]
        for device, guard, kind, interval in devices:
            conn.execute(
                "INSERT INTO devices (device_id, tenant_id, site_id, guard_id, kind,"
                " reporting_interval_s) VALUES (%s, 1, 1, %s, %s, %s)",
                (device, guard, kind, interval),
            )


class Traffic:
    """Payloads as devices send them, each with its own message id."""

    def __init__(self) -> None:
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return f"w-{self.n}"

    def telemetry(self, device: str, ts: datetime, battery: float = 80.0) -> Message:
        body = {"battery": battery, "signal": -60, "timestamp": ts.isoformat(),
                "message_id": self._id()}  # fmt: skip
        return f"device/{device}/telemetry", json.dumps(body).encode()

    def temperature(self, sensor: str, ts: datetime, value: float) -> Message:
        body = {"value": value, "timestamp": ts.isoformat(), "message_id": self._id()}
        return f"sensor/{sensor}/temperature", json.dumps(body).encode()

    def gps(self, ts: datetime, north_m: float, east_m: float) -> Message:
        body = {
            "lat": round(LAT0 + north_m / M_LAT, 7), "lon": round(LON0 + east_m / M_LON, 7),
            "accuracy": 5.0, "guard_id": 1, "client_id": 1, "timestamp": ts.isoformat(),
            "message_id": self._id(),
        }  # fmt: skip
        return "guard/1/gps", json.dumps(body).encode()

    def alive(self, device: str) -> Message:
        return self.telemetry(device, datetime.now(UTC))


# Every test runs its own broker (the private_broker fixture): the shared one carries other
# tests' devices and guards, whose ids (temp-1, guard 1) would feed these windows.


@contextmanager
def windows_flow(url: str, port: int) -> Iterator[FlowProcess]:
    flow = FlowProcess(url, port)
    flow.env.update(NOC_OFFLINE_INTERVALS="2", NOC_WINDOW_LATENESS_S="0.5")
    flow.start()
    try:
        wait_until(lambda: "connected to" in flow.output(), 60, "the flow to subscribe")
        yield flow
    finally:
        flow.stop()


def alerts(url: str) -> list[tuple[object, ...]]:
    """(source, type, severity, status, closed_by, count) of every alert, oldest first."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT source_id, alert_type, severity, status, closed_by, count"
            " FROM alerts ORDER BY alert_id"
        ).fetchall()


def alert(url: str, source: str, alert_type: str) -> list[tuple[object, ...]]:
    return [a for a in alerts(url) if a[:2] == (source, alert_type)]


def first_seen(url: str, source: str, alert_type: str) -> datetime:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT first_seen FROM alerts WHERE source_id = %s AND alert_type = %s"
            " ORDER BY alert_id LIMIT 1",
            (source, alert_type),
        ).fetchone()
    assert row is not None
    return row[0].astimezone(UTC)  # type: ignore[no-any-return]


def wait_for(
    url: str, flow: FlowProcess, predicate: Callable[[], bool], timeout: float, what: str
) -> None:
    """``wait_until`` that shows the alerts and the flow's log when it times out."""
    try:
        wait_until(predicate, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nalerts: {alerts(url)}\nflow log:\n{flow.output()}") from None


def publish(publisher: Publisher, messages: list[Message]) -> None:
    publisher.publish(messages)
    publisher.wait_all()


def test_offline_trend_and_man_down_alerts_are_raised_and_cleared(
    migrated_db: str, private_broker: PrivateBroker
) -> None:
    port = private_broker.port
    seed(migrated_db)
    t = Traffic()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

    def minute(i: float) -> datetime:
        return start + timedelta(minutes=i)

    draining = [t.telemetry("gd-1", minute(i), 100 - i) for i in range(16)]  # 60 %/h
    standing = [t.gps(minute(i), 2 * math.sin(i), 2 * math.cos(i)) for i in range(13)]
    hot = [t.temperature("temp-1", minute(i / 2), 58) for i in range(13)]  # 6 minutes above 50
    spike = [t.temperature("temp-2", minute(i / 2), 58 if i == 3 else 21) for i in range(13)]

    with windows_flow(migrated_db, port) as flow:
        publisher = Publisher(port)
        publish(publisher, [t.alive("hb-1") for _ in range(3)])
        publish(publisher, draining + standing + hot + spike)
        wanted = {
            ("hb-1", "device_offline", "high"),
            ("gd-1", "battery_drain", "medium"),
            ("guard:1", "man_down", "high"),
            ("temp-1", "temperature_sustained", "high"),
        }

        def raised() -> set[tuple[object, ...]]:
            return {a[:3] for a in alerts(migrated_db) if a[3] == "new"}

        wait_for(migrated_db, flow, lambda: raised() == wanted, 60, "the four alerts")
        assert first_seen(migrated_db, "gd-1", "battery_drain") == minute(10)
        assert first_seen(migrated_db, "guard:1", "man_down") == minute(10)
        assert first_seen(migrated_db, "temp-1", "temperature_sustained") == minute(5)

        # The conditions end: the device speaks, the battery charges, the guard walks away,
        # the room cools down.
        charging = [t.telemetry("gd-1", minute(16 + i), 86 + i) for i in range(15)]
        walking = [t.gps(minute(13 + i), 0, 60 * (i + 1)) for i in range(3)]
        cooled = [t.temperature("temp-1", minute(7), 35)]
        publish(publisher, [t.alive("hb-1"), *charging, *walking, *cooled])

        def resolved() -> set[tuple[object, ...]]:
            return {a[:2] for a in alerts(migrated_db) if a[3:5] == ("resolved", "system")}

        wait_for(
            migrated_db, flow, lambda: resolved() == {w[:2] for w in wanted}, 60, "the resolutions"
        )
        # Silent again: a second offline alert, not the first one reopened.
        wait_until(
            lambda: len(alert(migrated_db, "hb-1", "device_offline")) == 2, 30, "offline again"
        )
        publisher.close()
    rows = alerts(migrated_db)
    assert not [a for a in rows if a[0] == "temp-2"]  # one spike is not a trend
    assert all(a[5] == 1 for a in rows)  # every alert raised once
    assert alert(migrated_db, "hb-1", "device_offline")[1][3] == "new"


def test_a_restart_neither_misses_nor_repeats_a_window_alert(
    migrated_db: str, private_broker: PrivateBroker
) -> None:
    port = private_broker.port
    seed(migrated_db)
    t = Traffic()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

    def minute(i: float) -> datetime:
        return start + timedelta(minutes=i)

    with windows_flow(migrated_db, port) as flow:
        publisher = Publisher(port)
        # Before the crash: hb-1 goes offline; temp-2 is already hot for 6 minutes (raised);
        # temp-1 has been hot for 3 minutes and the guard has stood still for 6 (not yet).
        publish(publisher, [t.alive("hb-1")])
        publish(publisher, [t.temperature("temp-2", minute(i / 2), 60) for i in range(13)])
        publish(publisher, [t.temperature("temp-1", minute(i / 2), 60) for i in range(7)])
        publish(publisher, [t.gps(minute(i), 0, 0) for i in range(7)])
        wait_for(
            migrated_db,
            flow,
            lambda: (
                {a[:2] for a in alerts(migrated_db)}
                == {("hb-1", "device_offline"), ("temp-2", "temperature_sustained")}
            ),
            60,
            "the alerts before the crash",
        )
        # hb-2 keeps talking until the crash, then falls silent while the flow is down.
        stop = threading.Event()

        def chatter() -> None:
            while not stop.is_set():
                publisher.publish([t.alive("hb-2")])
                time.sleep(0.3)

        talker = threading.Thread(target=chatter, daemon=True)
        talker.start()
        time.sleep(2.5)
        assert not alert(migrated_db, "hb-2", "device_offline")
        flow.kill()  # SIGKILL: every window's memory is gone
        stop.set()
        talker.join(5)
        time.sleep(1.0)
        flow.start()
        wait_for(
            migrated_db, flow, lambda: flow.output().count("connected to") >= 2, 60, "the restart"
        )

        # hb-2's silence began before the restart: still reported (not missed).
        wait_for(
            migrated_db,
            flow,
            lambda: len(alert(migrated_db, "hb-2", "device_offline")) == 1,
            30,
            "hb-2 offline",
        )
        # The runs continue across the restart: raised once, at the time they happened.
        publish(publisher, [t.temperature("temp-1", minute(3.5 + i / 2), 60) for i in range(6)])
        publish(publisher, [t.gps(minute(7 + i), 0, 0) for i in range(5)])
        publish(publisher, [t.temperature("temp-2", minute(6.5 + i / 2), 59) for i in range(4)])
        wait_for(
            migrated_db,
            flow,
            lambda: (
                bool(alert(migrated_db, "temp-1", "temperature_sustained"))
                and bool(alert(migrated_db, "guard:1", "man_down"))
            ),
            60,
            "the alerts completed after the restart",
        )
        assert first_seen(migrated_db, "temp-1", "temperature_sustained") == minute(5)
        assert first_seen(migrated_db, "guard:1", "man_down") == minute(10)
        time.sleep(3)  # several of hb-1's intervals: its open alert is not raised again
        for source, alert_type in [
            ("hb-1", "device_offline"),
            ("temp-2", "temperature_sustained"),
            ("temp-1", "temperature_sustained"),
            ("guard:1", "man_down"),
            ("hb-2", "device_offline"),
        ]:
            assert [a[3:] for a in alert(migrated_db, source, alert_type)] == [("new", None, 1)], (
                source,
                alert_type,
                alerts(migrated_db),
            )

        # And everything clears.
        publish(
            publisher,
            [
                t.alive("hb-1"),
                t.alive("hb-2"),
                t.temperature("temp-1", minute(8), 30),
                t.temperature("temp-2", minute(9), 30),
                t.gps(minute(12), 0, 150),
            ],
        )
        wait_for(
            migrated_db,
            flow,
            lambda: sum(a[3] == "resolved" for a in alerts(migrated_db)) == 5,
            60,
            "the resolutions",
        )
        publisher.close()
    with psycopg.connect(migrated_db) as conn:
        history = conn.execute(
            "SELECT a.source_id, a.alert_type, array_agg(h.action ORDER BY h.ts)"
            " FROM alert_history h JOIN alerts a USING (alert_id)"
            " WHERE a.status = 'resolved' GROUP BY 1, 2"
        ).fetchall()
    assert {(s, ty): list(actions) for s, ty, actions in history} == {
        ("hb-1", "device_offline"): ["opened", "resolved"],
        ("hb-2", "device_offline"): ["opened", "resolved"],
        ("temp-1", "temperature_sustained"): ["opened", "resolved"],
        ("temp-2", "temperature_sustained"): ["opened", "resolved"],
        ("guard:1", "man_down"): ["opened", "resolved"],
    }


def test_man_down_follows_the_guards_shift(migrated_db: str, private_broker: PrivateBroker) -> None:
    """``guards.on_shift`` comes through the roster: going off shift resolves man-down, and a
    guard off shift is never alerted."""
    port = private_broker.port
    seed(migrated_db)
    t = Traffic()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

    def still(first_minute: int, minutes: int) -> list[Message]:
        return [t.gps(start + timedelta(minutes=first_minute + i), 0, 0) for i in range(minutes)]

    def set_shift(on: bool) -> None:
        with psycopg.connect(migrated_db, autocommit=True) as conn:
            conn.execute("UPDATE guards SET on_shift = %s WHERE guard_id = 1", (on,))

    def man_down() -> list[tuple[object, ...]]:
        return alert(migrated_db, "guard:1", "man_down")

    with windows_flow(migrated_db, port) as flow:
        publisher = Publisher(port)
        publish(publisher, still(0, 12))
        wait_for(migrated_db, flow, lambda: len(man_down()) == 1, 60, "man-down")
        set_shift(False)
        wait_for(
            migrated_db,
            flow,
            lambda: [a[3:5] for a in man_down()] == [("resolved", "system")],
            30,
            "the resolution when the guard goes off shift",
        )
        publish(publisher, still(12, 15))  # off shift: standing still is allowed
        time.sleep(2)
        assert len(man_down()) == 1
        set_shift(True)
        time.sleep(2)  # the roster notices the shift (registry refresh)
        publish(publisher, still(27, 12))
        wait_for(migrated_db, flow, lambda: len(man_down()) == 2, 60, "man-down on the new shift")
        publisher.close()
    assert [a[3] for a in man_down()] == ["resolved", "new"]
    assert first_seen(migrated_db, "guard:1", "man_down") == start + timedelta(minutes=10)
