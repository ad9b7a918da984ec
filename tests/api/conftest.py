"""A real API (uvicorn on a free loopback port) over a migrated, seeded scratch database.

Two tenants: 1 "acme" and 2 "globex", each with a site, a polygon zone, a circle zone, two
guards (approved in the polygon) and devices. Tests issue tokens with :meth:`Api.token`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from api.auth import issue_token
from api.server import ApiServer
from noc.settings import Settings, load_settings
from operators.records import AlertCandidate, DeviceAlert, Enriched, Position, Telemetry
from storage.migrate import migrate
from storage.tokens import record_token
from storage.writer import BatchWriter
from tests.services import scratch_database

SECRET = "test-secret-0123456789-0123456789-abcdef"

SEED = """
INSERT INTO tenants (tenant_id, name) VALUES (1, 'acme'), (2, 'globex');
INSERT INTO sites (site_id, tenant_id, name, lat, lon) VALUES
    (10, 1, 'Acme HQ', 12.9716, 77.5946), (20, 2, 'Globex Plant', 48.8566, 2.3522);
INSERT INTO zones (zone_id, tenant_id, site_id, name, geometry) VALUES
    (100, 1, 10, 'HQ perimeter', '{"type": "Polygon", "coordinates": [[[77.594, 12.971],
      [77.596, 12.971], [77.596, 12.973], [77.594, 12.973], [77.594, 12.971]]]}'),
    (200, 2, 20, 'Plant perimeter', '{"type": "Polygon", "coordinates": [[[2.35, 48.855],
      [2.355, 48.855], [2.355, 48.858], [2.35, 48.858], [2.35, 48.855]]]}');
INSERT INTO zones (zone_id, tenant_id, site_id, name, center_lat, center_lon, radius_m) VALUES
    (101, 1, 10, 'HQ gate', 12.9716, 77.5946, 30), (201, 2, 20, 'Plant gate', 48.8566, 2.3522, 25);
INSERT INTO guards (guard_id, tenant_id, site_id, name) VALUES
    (1, 1, 10, 'Asha'), (2, 1, 10, 'Bala'), (3, 2, 20, 'Claire'), (4, 2, 20, 'Didier');
INSERT INTO guard_zones (tenant_id, guard_id, zone_id) VALUES (1, 1, 100), (1, 2, 100),
    (2, 3, 200), (2, 4, 200);
INSERT INTO devices (device_id, tenant_id, site_id, guard_id, kind, reporting_interval_s) VALUES
    ('gd-1', 1, 10, 1, 'guard_device', 30), ('gd-2', 1, 10, 2, 'guard_device', 30),
    ('pb-1', 1, 10, NULL, 'panic_button', 60), ('sn-1', 1, 10, NULL, 'sensor', 60),
    ('gd-3', 2, 20, 3, 'guard_device', 30), ('pb-2', 2, 20, NULL, 'panic_button', 60);
"""


@dataclass
class Api:
    """The running API and helpers to drive it."""

    url: str
    db: str
    settings: Settings
    server: ApiServer
    writer: BatchWriter
    _seq: list[int] = field(default_factory=lambda: [0])

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + self.settings.api.ws_path

    def token(self, tenant_id: int = 1, role: str = "operator", subject: str = "alice") -> str:
        token, record = issue_token(SECRET, tenant_id, role, subject, timedelta(hours=1))
        with psycopg.connect(self.db, autocommit=True) as conn:
            record_token(conn, record)
        return token

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def next(self) -> int:
        self._seq[0] += 1
        return self._seq[0]

    def alerts(
        self, tenant_id: int, sources: list[str], severity: str = "critical", kind: str = "panic"
    ) -> list[int]:
        """Open (or fold into) one alert per source through the batch writer; their ids."""
        now = datetime.now(UTC)
        batch = []
        for source in sources:
            n = self.next()
            ts = now + timedelta(microseconds=n)
            rec = DeviceAlert(source, kind, ts, severity, f"{kind} from {source}", None, None,
                              f"a-{n}", now)  # fmt: skip
            item = Enriched(rec, tenant_id=tenant_id, device_id=source)
            item.alerts.append(
                AlertCandidate(tenant_id, source, kind, severity, f"{kind} from {source}",
                               ts, device_id=source)
            )  # fmt: skip
            batch.append(item)
        result = self.writer.write(batch)
        return [a.alert_id for a in result.alerts]

    def telemetry(self, tenant_id: int, device_id: str, battery: float) -> None:
        now = datetime.now(UTC)
        n = self.next()
        rec = Telemetry(device_id, now, battery, -60.0, 21.0, f"t-{n}", now)
        self.writer.write([Enriched(rec, tenant_id=tenant_id, device_id=device_id)])

    def positions(
        self,
        tenant_id: int,
        fixes: list[tuple[int, float, float, str]],
        writer: BatchWriter | None = None,
    ) -> None:
        """Store fixes (guard, lat, lon, zone_status) in one batch."""
        now = datetime.now(UTC)
        batch = []
        for guard, lat, lon, status in fixes:
            n = self.next()
            rec = Position(
                guard, now + timedelta(microseconds=n), lat, lon, 5.0, None, f"p-{n}", now
            )
            batch.append(
                Enriched(rec, tenant_id=tenant_id, guard_id=guard, device_id=f"gd-{guard}",
                         zone_status=status, zone_id=100 if status == "inside" else None)
            )  # fmt: skip
        (writer or self.writer).write(batch)

    def event_ids(self, tenant_id: int) -> list[int]:
        with psycopg.connect(self.db) as conn:
            rows = conn.execute(
                "SELECT event_id FROM ws_events WHERE tenant_id = %s ORDER BY event_id",
                (tenant_id,),
            ).fetchall()
        return [int(r[0]) for r in rows]


def start_api(db: str, **env: str) -> Api:
    settings = load_settings(
        {"NOC_DATABASE_URL": db, "NOC_TOKEN_SECRET": SECRET, "NOC_LOG_LEVEL": "WARNING", **env}
    )
    server = ApiServer(settings, port=0).start()
    return Api(server.url, db, settings, server, BatchWriter(db, application_name="test-writer"))


@pytest.fixture(scope="module")
def seeded_db(postgres: str) -> Iterator[str]:
    """A migrated, seeded database shared by the tests of one module."""
    with scratch_database(postgres) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            conn.execute(SEED)
        yield url


@pytest.fixture(scope="module")
def api(seeded_db: str) -> Iterator[Api]:
    running = start_api(seeded_db)
    try:
        yield running
    finally:
        running.writer.close()
        running.server.stop()


def loads(message: str | bytes) -> dict[str, Any]:
    value = json.loads(message)
    assert isinstance(value, dict)
    return value
