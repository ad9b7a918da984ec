"""REST against a real uvicorn server and the real database: alerts, guards, zones, devices."""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.api.conftest import Api
from tests.services import MQTT_HOST, MQTT_PORT


def test_alert_list_is_tenant_scoped_filtered_and_paged(api: Api) -> None:
    mine = api.alerts(1, [f"list-{uuid.uuid4().hex[:6]}-{i}" for i in range(7)])
    theirs = api.alerts(2, ["list-other"])
    api.alerts(1, ["list-low"], severity="low")
    with api.client(api.token(1)) as http:
        everything = http.get("/api/alerts", params={"limit": 500}).json()
        ids = [a["alert_id"] for a in everything["items"]]
        assert set(mine) <= set(ids)
        assert not set(theirs) & set(ids)
        assert ids == sorted(ids, reverse=True)
        assert {a["tenant_id"] for a in everything["items"]} == {1}

        low = http.get("/api/alerts", params={"severity": "low"}).json()["items"]
        assert low and {a["severity"] for a in low} == {"low"}

        pages, before = [], None
        while True:
            params = {"limit": 3, "severity": "critical", "status": "new"}
            if before:
                params["before_id"] = before
            page = http.get("/api/alerts", params=params).json()
            pages.append([a["alert_id"] for a in page["items"]])
            before = page["next_before_id"]
            if before is None:
                break
        flat = [i for p in pages for i in p]
        assert flat == sorted(flat, reverse=True) and len(flat) == len(set(flat))
        assert set(mine) <= set(flat)
        assert all(len(p) == 3 for p in pages[:-1])

        assert http.get("/api/alerts", params={"status": "bogus"}).status_code == 400
        assert http.get("/api/alerts", params={"limit": 0}).status_code == 400


def test_acknowledge_updates_row_history_and_tells_the_device(api: Api) -> None:
    source = f"pb-ack-{uuid.uuid4().hex[:6]}"
    (alert_id,) = api.alerts(1, [source])
    received: list[dict[str, object]] = []
    got = threading.Event()
    sub = _subscriber(f"device/{source}/commands", received, got)
    try:
        with api.client(api.token(1, subject="olivia")) as http:
            r = http.post(f"/api/alerts/{alert_id}/acknowledge", json={"note": "on my way"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["alert"]["status"] == "acknowledged"
            assert body["alert"]["acknowledged_by"] == "olivia"
            assert body["command"]["published"] is True
            assert body["command"]["topic"] == f"device/{source}/commands"
            assert got.wait(10), "the device did not receive the acknowledgement"
            assert received[0]["type"] == "alert_ack" and received[0]["alert_id"] == alert_id

            detail = http.get(f"/api/alerts/{alert_id}").json()
            actions = [(h["action"], h["actor"], h["note"]) for h in detail["history"]]
            assert actions == [("opened", "system", ""), ("acknowledged", "olivia", "on my way")]

            again = http.post(f"/api/alerts/{alert_id}/acknowledge")
            assert again.status_code == 409 and again.json()["error"] == "invalid_transition"

            resolved = http.post(f"/api/alerts/{alert_id}/resolve", json={"note": "all clear"})
            assert resolved.status_code == 200 and resolved.json()["command"] is None
            assert resolved.json()["alert"]["status"] == "resolved"
            assert http.post(f"/api/alerts/{alert_id}/false-alarm").status_code == 409
    finally:
        sub.disconnect()
        sub.loop_stop()
    with psycopg.connect(api.db) as conn:
        row = conn.execute(
            "SELECT status, acknowledged_by, closed_by FROM alerts WHERE alert_id = %s",
            (alert_id,),
        ).fetchone()
    assert row == ("resolved", "olivia", "olivia")


def test_false_alarm_from_new(api: Api) -> None:
    (alert_id,) = api.alerts(1, [f"pb-fa-{uuid.uuid4().hex[:6]}"])
    with api.client(api.token(1)) as http:
        r = http.post(f"/api/alerts/{alert_id}/false-alarm", json={"note": "test button"})
        assert r.status_code == 200
        assert r.json()["alert"]["status"] == "false_alarm"


def test_another_tenants_alert_does_not_exist(api: Api) -> None:
    (alert_id,) = api.alerts(2, [f"pb-x-{uuid.uuid4().hex[:6]}"])
    with api.client(api.token(1)) as http:
        assert http.get(f"/api/alerts/{alert_id}").status_code == 404
        r = http.post(f"/api/alerts/{alert_id}/acknowledge")
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    with psycopg.connect(api.db) as conn:
        status = conn.execute("SELECT status FROM alerts WHERE alert_id = %s", (alert_id,))
        assert status.fetchone() == ("new",)


def test_guards_show_latest_position_and_zone_status(api: Api) -> None:
    api.positions(1, [(1, 12.9720, 77.5950, "inside"), (2, 12.9800, 77.6000, "outside")])
    api.positions(1, [(1, 12.9721, 77.5951, "inside")])
    api.positions(2, [(3, 48.8560, 2.3520, "inside")])
    with api.client(api.token(1)) as http:
        guards = {g["guard_id"]: g for g in http.get("/api/guards").json()}
        assert set(guards) == {1, 2}
        assert guards[1]["position"]["lat"] == pytest.approx(12.9721)
        assert guards[1]["position"]["zone_status"] == "inside"
        assert guards[1]["zone_ids"] == [100] and guards[1]["device_id"] == "gd-1"
        assert guards[2]["position"]["zone_status"] == "outside"
        assert http.get("/api/guards/3").status_code == 404
        assert http.get("/api/guards/1").json()["name"] == "Asha"

        track = http.get("/api/guards/1/track").json()
        assert [p["lat"] for p in track][-2:] == pytest.approx([12.9720, 12.9721])
        future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
        assert (
            http.get("/api/guards/1/track", params={"since": future, "until": later}).json() == []
        )
        bad = http.get("/api/guards/1/track", params={"since": later, "until": future})
        assert bad.status_code == 400
        assert http.get("/api/guards/3/track").status_code == 404

        summary = http.get("/api/summary").json()
        assert summary["guards"]["inside"] == 1 and summary["guards"]["outside"] == 1
        assert summary["open_alerts"]["critical"] >= 1


def test_devices_with_status(api: Api) -> None:
    api.telemetry(1, "sn-1", battery=50.0)
    with api.client(api.token(1)) as http:
        devices = {d["device_id"]: d for d in http.get("/api/devices").json()}
    assert set(devices) >= {"gd-1", "gd-2", "pb-1", "sn-1"}
    assert not {"gd-3", "pb-2"} & set(devices)
    assert devices["sn-1"]["status"] == "online" and devices["sn-1"]["battery"] == 50.0
    assert devices["pb-1"]["status"] == "never" and devices["pb-1"]["last_seen"] is None


SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[77.60, 12.96], [77.61, 12.96], [77.61, 12.97], [77.60, 12.97], [77.60, 12.96]]
    ],
}


def test_zones_read_for_all_write_for_admins(api: Api) -> None:
    admin = api.client(api.token(1, role="admin", subject="root"))
    operator = api.client(api.token(1, role="operator"))
    with admin, operator:
        names = {z["name"] for z in operator.get("/api/zones").json()}
        assert names == {"HQ perimeter", "HQ gate"}
        body = {"name": "Car park", "site_id": 10, "geometry": SQUARE,
                "windows": [{"start": "22:00", "end": "06:00"}]}  # fmt: skip
        assert operator.post("/api/zones", json=body).status_code == 403
        created = admin.post("/api/zones", json=body)
        assert created.status_code == 201, created.text
        zone = created.json()
        assert zone["geometry"] == SQUARE and zone["site_id"] == 10
        zone_id = zone["zone_id"]
        assert admin.post("/api/zones", json=body).status_code == 409  # name taken

        circle = {"name": "Car park", "center_lat": 12.96, "center_lon": 77.6, "radius_m": 50}
        replaced = admin.put(f"/api/zones/{zone_id}", json=circle)
        assert replaced.status_code == 200, replaced.text
        assert replaced.json()["radius_m"] == 50 and replaced.json()["geometry"] is None
        assert operator.get(f"/api/zones/{zone_id}").json()["radius_m"] == 50

        bad = [
            {"name": "x", "geometry": {"type": "Polygon", "coordinates": [[[200, 0], [1, 1]]]}},
            {"name": "x"},
            {"name": "x", "geometry": SQUARE, "radius_m": 5},
            {"name": "x", "center_lat": 1, "center_lon": 1, "radius_m": -5},
            {"name": "x", "geometry": SQUARE, "windows": [{"start": "25:00", "end": "01:00"}]},
        ]
        for b in bad:
            r = admin.post("/api/zones", json=b)
            assert r.status_code == 422, (b, r.text)
        other_site = admin.post("/api/zones", json={**body, "name": "y", "site_id": 20})
        assert other_site.status_code == 422 and other_site.json()["error"] == "invalid_reference"

        assert admin.put("/api/zones/200", json=circle).status_code == 404  # globex's
        assert admin.delete("/api/zones/200").status_code == 404
        assert operator.delete(f"/api/zones/{zone_id}").status_code == 403
        assert admin.delete(f"/api/zones/{zone_id}").status_code == 204
        assert operator.get(f"/api/zones/{zone_id}").status_code == 404
    with psycopg.connect(api.db) as conn:
        kinds = conn.execute(
            "SELECT payload->>'action' FROM ws_events WHERE type = 'zone' AND tenant_id = 1"
            " ORDER BY event_id"
        ).fetchall()
    assert [k[0] for k in kinds] == ["created", "updated", "deleted"]


def test_roles_and_token_checks(api: Api) -> None:
    (alert_id,) = api.alerts(1, [f"pb-role-{uuid.uuid4().hex[:6]}"])
    with api.client(api.token(1, role="analyst")) as http:
        assert http.get(f"/api/alerts/{alert_id}").status_code == 200
        r = http.post(f"/api/alerts/{alert_id}/acknowledge")
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
    with api.client(None) as http:
        r = http.get("/api/alerts")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert http.get("/api/alerts", headers={"Authorization": "Basic eA=="}).status_code == 401
        assert http.get("/api/alerts", headers={"Authorization": "Bearer x.y.z"}).status_code == 401


def test_page_schema_health_and_metrics_are_public(api: Api) -> None:
    with api.client(None) as http:
        page = http.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "NOC" in page.text
        schema = http.get("/schema/openapi.json").json()
        assert {"/api/alerts", "/api/alerts/{alert_id}/acknowledge", "/api/guards/{guard_id}/track",
                "/api/zones", "/api/devices"} <= set(schema["paths"])  # fmt: skip
        assert http.get("/healthz").json() == {"ok": True, "database": True, "event_listener": True}
        metrics = http.get("/metrics").text
        for name in ("noc_api_ws_connections", "noc_api_ws_events_sent_total",
                     "noc_api_ws_overflow_disconnects_total", "noc_api_requests_total"):  # fmt: skip
            assert name in metrics


def test_the_schema_viewer_needs_nothing_from_outside(api: Api) -> None:
    """The NOC's network reaches no CDN: the viewer's scripts and styles come from the app."""
    with api.client(None) as http:
        page = http.get("/schema")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        urls = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)', page.text)
        assert urls and all(u.startswith("/schema/") for u in urls), urls
        for url in urls:
            asset = http.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 1000, url
        assert "NOC Stream API" in page.text  # the schema itself is in the page


def _subscriber(topic: str, received: list[dict[str, object]], got: threading.Event) -> mqtt.Client:
    subscribed = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        received.append(json.loads(msg.payload))
        got.set()

    client.on_message = on_message
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    assert subscribed.wait(10), "could not subscribe to the command topic"
    return client
