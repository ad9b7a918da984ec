"""Geofencing through the real flow and database: no jitter floods, one alert per excursion."""

from __future__ import annotations

import json
import math
import random
import threading
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from storage.zones import import_zones
from tests.integration.harness import Publisher, running_flow, wait_until

pytestmark = pytest.mark.integration

LAT0, LON0 = 12.9716, 77.5946
HALF = 100.0  # metres: the zone is a 200 m square around (LAT0, LON0)
M_LAT = 111_320.0
M_LON = 111_320.0 * math.cos(math.radians(LAT0))


def offset(north_m: float, east_m: float) -> tuple[float, float]:
    return LAT0 + north_m / M_LAT, LON0 + east_m / M_LON


def square() -> dict[str, object]:
    corners = [offset(-HALF, -HALF), offset(-HALF, HALF), offset(HALF, HALF), offset(HALF, -HALF)]
    ring = [[lon, lat] for lat, lon in corners]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def seed(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme')")
        conn.execute("INSERT INTO sites (site_id, tenant_id, name) VALUES (1, 1, 'hq')")
        for g in (1, 2):
            conn.execute(
                "INSERT INTO guards (guard_id, tenant_id, site_id, name) VALUES (%s, 1, 1, %s)",
                (g, f"guard {g}"),
            )
            conn.execute(
                "INSERT INTO devices (device_id, tenant_id, site_id, guard_id, kind)"
                " VALUES (%s, 1, 1, %s, 'guard_device')",
                (f"gd-{g}", g),
            )
        report = import_zones(
            conn,
            1,
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "geometry": square(),
                        "properties": {
                            "zone_id": 1,
                            "site_id": 1,
                            "name": "yard",
                            "guards": [1, 2],
                        },
                    }
                ],
            },
        )
        assert report.approvals == 2


def fix(
    guard: int, ts: datetime, north: float, east: float, accuracy: float, n: int
) -> tuple[str, bytes]:
    lat, lon = offset(north, east)
    body = {
        "lat": round(lat, 7), "lon": round(lon, 7), "accuracy": accuracy, "guard_id": guard,
        "client_id": 1, "timestamp": ts.isoformat(), "message_id": f"g{guard}-{n}",
    }  # fmt: skip
    return f"guard/{guard}/gps", json.dumps(body).encode()


def jittery_guard(start: datetime) -> list[tuple[str, bytes]]:
    """Stands still 3 m inside the east edge for an hour; 10 m accuracy; N(0, 5 m) noise."""
    rng = random.Random(3)
    out = []
    for n in range(720):
        north, east = rng.gauss(0, 5), HALF - 3 + rng.gauss(0, 5)
        out.append(fix(1, start + timedelta(seconds=5 * n), north, east, 10.0, n))
    return out


def walking_guard(start: datetime) -> list[tuple[str, bytes]]:
    """Walks from the centre to 200 m outside the east edge, waits, and walks back."""
    path = [i * 10.0 for i in range(31)]  # 0 .. 300 m east
    path += [300.0] * 20 + list(reversed(path))
    return [
        fix(2, start + timedelta(seconds=5 * n), 0.0, east, 8.0, n) for n, east in enumerate(path)
    ]


def test_jitter_raises_nothing_and_an_excursion_raises_one_alert(
    migrated_db: str, mqtt_broker: tuple[str, int]
) -> None:
    _host, port = mqtt_broker
    seed(migrated_db)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    commands: list[dict[str, object]] = []
    subscribed = threading.Event()
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, *_: (c.subscribe("device/+/commands", qos=1), subscribed.set())
    sub.on_message = lambda _c, _u, m: commands.append({"topic": m.topic, **json.loads(m.payload)})
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    assert subscribed.wait(10)
    messages = jittery_guard(start) + walking_guard(start)
    with running_flow(migrated_db, port) as flow:
        wait_until(lambda: "connected to" in flow.output(), 60, "the flow to subscribe")
        publisher = Publisher(port)
        publisher.publish(messages)
        publisher.wait_all()
        publisher.close()

        def stored() -> int:
            with psycopg.connect(migrated_db) as conn:
                row = conn.execute("SELECT count(*) FROM positions").fetchone()
                return int(row[0]) if row else 0

        wait_until(lambda: stored() == len(messages), 120, "all positions stored")
    wait_until(lambda: len(commands) >= 1, 10, "the device warning")
    sub.loop_stop()
    with psycopg.connect(migrated_db) as conn:
        alerts = conn.execute(
            "SELECT source_id, alert_type, severity, status, closed_by FROM alerts"
            " WHERE alert_type = 'geofence_violation' ORDER BY 1"
        ).fetchall()
        statuses = dict(
            conn.execute(
                "SELECT zone_status, count(*) FROM positions WHERE guard_id = 1 GROUP BY 1"
            ).fetchall()
        )
        outside = conn.execute(
            "SELECT count(*) FROM positions WHERE guard_id = 2 AND zone_status = 'outside'"
        ).fetchone()
    assert alerts == [("guard:2", "geofence_violation", "critical", "resolved", "system")]
    # Jitter does produce uncertain and the odd confidently-outside fix; hysteresis absorbs them.
    assert statuses.get("uncertain", 0) > 0
    assert statuses.get("outside", 0) < 0.02 * 720
    assert outside is not None and outside[0] > 20
    warnings = [c for c in commands if c["topic"] == "device/gd-2/commands"]
    assert len(warnings) == 1 and warnings[0]["type"] == "geofence_warning"
    assert not [c for c in commands if c["topic"] == "device/gd-1/commands"]


def test_a_flow_restart_neither_loses_nor_repeats_a_violation(
    migrated_db: str, mqtt_broker: tuple[str, int]
) -> None:
    _host, port = mqtt_broker
    seed(migrated_db)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    out_and_wait = [fix(2, start + timedelta(seconds=5 * n), 0.0, 300.0, 8.0, n) for n in range(10)]
    more_outside = [
        fix(2, start + timedelta(seconds=5 * n), 0.0, 300.0, 8.0, n) for n in range(10, 30)
    ]
    back = [fix(2, start + timedelta(seconds=5 * n), 0.0, 0.0, 8.0, n) for n in range(30, 40)]

    def alerts() -> list[tuple[object, ...]]:
        with psycopg.connect(migrated_db) as conn:
            return conn.execute(
                "SELECT alert_type, status, count FROM alerts"
                " WHERE alert_type = 'geofence_violation'"
            ).fetchall()

    def positions() -> int:
        with psycopg.connect(migrated_db) as conn:
            row = conn.execute("SELECT count(*) FROM positions").fetchone()
            return int(row[0]) if row else 0

    with running_flow(migrated_db, port) as flow:
        wait_until(lambda: "connected to" in flow.output(), 60, "the flow to subscribe")
        publisher = Publisher(port)
        publisher.publish(out_and_wait)
        publisher.wait_all()
        wait_until(lambda: positions() == 10, 60, "the first fixes")
        assert alerts() == [("geofence_violation", "new", 1)]
        flow.kill()  # SIGKILL: the tracker's memory is gone
        flow.start()
        wait_until(lambda: flow.output().count("connected to") >= 2, 60, "the restart")
        publisher.publish(more_outside)
        publisher.wait_all()
        wait_until(lambda: positions() == 30, 60, "the fixes after the restart")
        assert alerts() == [("geofence_violation", "new", 1)]  # not raised again
        publisher.publish(back)
        publisher.wait_all()
        publisher.close()
        wait_until(lambda: positions() == 40, 60, "the fixes back inside")
        wait_until(lambda: alerts() == [("geofence_violation", "resolved", 1)], 10, "resolution")
    with psycopg.connect(migrated_db) as conn:
        history = conn.execute(
            "SELECT h.action FROM alert_history h JOIN alerts a USING (alert_id)"
            " WHERE a.alert_type = 'geofence_violation' ORDER BY h.ts"
        ).fetchall()
    assert history == [("opened",), ("resolved",)]
