"""The NOC page in headless Chromium, end to end with every real component.

Device --MQTT--> Mosquitto --> ingest flow --> TimescaleDB --NOTIFY--> `noc api` --WebSocket-->
the page; the operator clicks Acknowledge --> REST --> database + history --> MQTT command to
the device. A missing browser, broker or database fails the test; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Browser, expect, sync_playwright

from api.auth import issue_token
from operators.records import AlertCandidate, DeviceAlert, Enriched
from storage.tokens import record_token
from storage.writer import BatchWriter
from tests.api.process import ApiProcess
from tests.integration.harness import Publisher, running_flow, wait_until

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SECRET = "browser-test-secret-0123456789abcdef0123"
SCREENSHOT = Path(tempfile.gettempdir()) / "noc-browser-test.png"


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run `make provision`"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def seed(db: str, device_id: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme');
            INSERT INTO sites (site_id, tenant_id, name, lat, lon)
                VALUES (10, 1, 'Acme HQ', 12.9716, 77.5946);
            INSERT INTO zones (zone_id, tenant_id, site_id, name, geometry) VALUES (100, 1, 10,
                'HQ perimeter', '{"type": "Polygon", "coordinates": [[[77.594, 12.971],
                [77.596, 12.971], [77.596, 12.973], [77.594, 12.973], [77.594, 12.971]]]}');
            INSERT INTO guards (guard_id, tenant_id, site_id, name) VALUES (1, 1, 10, 'Asha');
            INSERT INTO guard_zones (tenant_id, guard_id, zone_id) VALUES (1, 1, 100);
            """
        )
        conn.execute(
            "INSERT INTO devices (device_id, tenant_id, site_id, guard_id, kind)"
            " VALUES (%s, 1, 10, 1, 'guard_device')",
            (device_id,),
        )


class CommandListener:
    """Subscribes to a device's command topic on the shared broker."""

    def __init__(self, topic: str, port: int) -> None:
        self.messages: list[dict[str, Any]] = []
        self.got = threading.Event()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311
        )
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), f"could not subscribe to {topic}"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.append(json.loads(msg.payload))
        self.got.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_operator_sees_a_panic_and_acknowledges_it(
    browser: Browser, migrated_db: str, mqtt_broker: tuple[str, int]
) -> None:
    _host, port = mqtt_broker
    device_id = f"gd-{uuid.uuid4().hex[:8]}"
    seed(migrated_db, device_id)
    token, record = issue_token(SECRET, 1, "operator", "olivia", timedelta(hours=1))
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        record_token(conn, record)

    api = ApiProcess(migrated_db, SECRET, NOC_MQTT_PORT=str(port)).start()
    listener = CommandListener(f"device/{device_id}/commands", port)
    try:
        with running_flow(migrated_db, port) as flow:
            wait_until(lambda: "connected to" in flow.output(), 60, "the flow to subscribe")
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{api.url}/?token={token}")
            expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=15_000)
            assert "token=" not in page.url  # the token left the address bar
            expect(page.locator("#who")).to_contain_text("olivia")

            publisher = Publisher(port)
            publisher.publish(
                [
                    ("guard/1/gps", json.dumps({"lat": 12.9721, "lon": 77.5951, "accuracy": 5,
                     "timestamp": datetime.now(UTC).isoformat()}).encode()),
                    (f"alert/panic/{device_id}", json.dumps({"severity": "critical",
                     "message": "Panic button pressed",
                     "timestamp": datetime.now(UTC).isoformat()}).encode()),
                ]
            )  # fmt: skip
            publisher.wait_all()
            publisher.close()

            item = page.locator(".alert[data-severity='critical']", has_text="Panic button pressed")
            expect(item).to_be_visible(timeout=20_000)
            expect(page.locator("#count-critical b")).to_have_text("1")
            page.wait_for_function(
                "() => state.guards.get(1)?.position?.lat > 12.97", timeout=10_000
            )
            expect(page.locator("#count-inside b")).to_have_text("1")  # geofenced by the flow
            page.screenshot(path=str(SCREENSHOT))

            alert_id = int(item.get_attribute("data-alert-id") or 0)
            item.locator("button[data-action='acknowledge']").click()
            expect(item).to_have_attribute("data-status", "acknowledged", timeout=10_000)
            assert listener.got.wait(15), "the device did not receive the acknowledgement"
            page.close()
            assert flow.alive(), flow.output()
    finally:
        listener.close()
        api.stop()

    with psycopg.connect(migrated_db) as conn:
        row = conn.execute(
            "SELECT status, acknowledged_by, severity, device_id FROM alerts WHERE alert_id = %s",
            (alert_id,),
        ).fetchone()
        history = conn.execute(
            "SELECT action, actor, from_status, to_status FROM alert_history"
            " WHERE alert_id = %s ORDER BY ts",
            (alert_id,),
        ).fetchall()
    assert row == ("acknowledged", "olivia", "critical", device_id)
    assert history == [
        ("opened", "system", None, "new"),
        ("acknowledged", "olivia", "new", "acknowledged"),
    ]
    (command,) = listener.messages
    assert command["type"] == "alert_ack" and command["alert_id"] == alert_id
    assert command["by"] == "olivia"


def test_page_reconnects_and_resumes_after_an_api_restart(
    browser: Browser, migrated_db: str
) -> None:
    device_id = f"gd-{uuid.uuid4().hex[:8]}"
    seed(migrated_db, device_id)
    token, record = issue_token(SECRET, 1, "operator", "olivia", timedelta(hours=1))
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        record_token(conn, record)
    writer = BatchWriter(migrated_db, application_name="browser-test-writer")
    api = ApiProcess(migrated_db, SECRET, NOC_LOG_LEVEL="WARNING").start()
    try:
        page = browser.new_page()
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(f"{api.url}/?token={token}")
        conn_state = page.locator("#conn")
        expect(conn_state).to_have_attribute("data-state", "live", timeout=15_000)

        writer.write([_panic(device_id, "first panic")])
        expect(page.locator(".alert", has_text="first panic")).to_be_visible(timeout=10_000)

        api.stop()
        expect(conn_state).not_to_have_attribute("data-state", "live", timeout=10_000)
        writer.write([_panic("pb-while-down", "panic while the API was down", kind="duress")])
        api.start()

        missed = page.locator(".alert", has_text="panic while the API was down")
        expect(missed).to_be_visible(timeout=20_000)
        expect(conn_state).to_have_attribute("data-state", "live")
        assert "last_event_id=" not in sockets[0]
        assert any("last_event_id=" in url for url in sockets[1:]), sockets
        expect(page.locator("#count-critical b")).to_have_text("2")
        page.close()
    finally:
        writer.close()
        api.stop()


def _panic(source: str, message: str, kind: str = "panic") -> Enriched:
    now = datetime.now(UTC)
    item = Enriched(
        DeviceAlert(source, kind, now, "critical", message, None, None, uuid.uuid4().hex, now),
        tenant_id=1,
        device_id=source,
    )
    item.alerts.append(AlertCandidate(1, source, kind, "critical", message, now, device_id=source))
    return item


def test_the_schema_viewer_renders_without_leaving_loopback(
    browser: Browser, migrated_db: str
) -> None:
    """Swagger UI draws the API from the app's own copy of its files; any request that would
    leave 127.0.0.1 is refused and counted."""
    api = ApiProcess(migrated_db, SECRET).start()
    outside: list[str] = []
    try:
        page = browser.new_page()

        def route(r: Any) -> None:
            url = r.request.url
            if url.startswith(api.url):
                r.continue_()
            else:
                outside.append(url)
                r.abort()

        page.route("**/*", route)
        page.goto(f"{api.url}/schema")
        page.wait_for_selector("text=NOC Stream API", timeout=20_000)
        page.get_by_text("/api/alerts", exact=True).first.wait_for(timeout=20_000)
        page.screenshot(path=str(SCREENSHOT.with_name("noc-schema-viewer.png")))
        page.close()
    finally:
        api.stop()
    assert outside == []
