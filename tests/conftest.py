from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from storage.migrate import migrate
from tests.integration.harness import PrivateBroker
from tests.services import MQTT_HOST, MQTT_PORT, PG_ADMIN_URL, require_port, scratch_database


@pytest.fixture(scope="session")
def postgres() -> str:
    """The shared PostgreSQL server's admin URL (must be running)."""
    require_port("127.0.0.1", 5432, "PostgreSQL")
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """The shared Mosquitto broker (must be running)."""
    require_port(MQTT_HOST, MQTT_PORT, "Mosquitto")
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def empty_db(postgres: str) -> Iterator[str]:
    """URL of a new, empty database dropped after the test."""
    with scratch_database(postgres) as url:
        yield url


@pytest.fixture
def migrated_db(empty_db: str) -> str:
    """URL of a new database at the latest schema version."""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        migrate(conn)
    return empty_db


@pytest.fixture
def private_broker() -> Iterator[PrivateBroker]:
    """A Mosquitto of the test's own (the project's limits, a free port), stopped after it."""
    broker = PrivateBroker().start()
    try:
        yield broker
    finally:
        broker.close()
