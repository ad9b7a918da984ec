from __future__ import annotations

import pytest

from noc.errors import SettingsError
from noc.settings import describe, load_settings


def test_defaults_are_valid() -> None:
    settings = load_settings({})
    assert settings.database.url.startswith("postgresql://")
    assert settings.mqtt.port == 1883
    assert settings.geofence.violation_severity == "critical"


def test_values_are_parsed() -> None:
    settings = load_settings(
        {"NOC_MQTT_PORT": "2883", "NOC_GEOFENCE_CONFIRM_SECONDS": "12.5", "NOC_LOG_LEVEL": "debug"}
    )
    assert settings.mqtt.port == 2883
    assert settings.geofence.confirm_seconds == 12.5
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("NOC_DATABASE_URL", "nonsense", "expected a URL"),
        ("NOC_DATABASE_URL", "mysql://x/y", "expected a URL"),
        ("NOC_MQTT_PORT", "abc", "must be a number"),
        ("NOC_MQTT_PORT", "70000", "TCP port"),
        ("NOC_MQTT_PARTITIONS", "0", "positive integer"),
        ("NOC_GEOFENCE_CONFIRM_SECONDS", "-1", ">= 0"),
        ("NOC_GEOFENCE_CONFIRM_SECONDS", "nan", ">= 0"),
        ("NOC_GEOFENCE_SEVERITY", "urgent", "must be one of"),
        ("NOC_LOG_LEVEL", "loud", "DEBUG, INFO"),
        ("NOC_TOPIC_COMMANDS", "device/commands", "{device_id}"),
        ("NOC_DATABSE_URL", "postgresql://x/y", "unknown setting"),
    ],
)
def test_bad_setting_names_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    text = str(info.value)
    assert text.startswith(name)
    assert message in text
    assert "\n" not in text


def test_every_setting_is_documented() -> None:
    rows = describe()
    names = [name for name, _doc, _default in rows]
    assert len(names) == len(set(names))
    assert all(name.startswith("NOC_") and doc for name, doc, _default in rows)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alert/#", ("alert/#",)),
        (" alert/# , sensor/+/smoke ", ("alert/#", "sensor/+/smoke")),
        ("alert/+/+,guard/+/panic", ("alert/+/+", "guard/+/panic")),
        ("", ()),
    ],
)
def test_priority_topics_are_mqtt_filters(raw: str, expected: tuple[str, ...]) -> None:
    settings = load_settings({"NOC_MQTT_PRIORITY_TOPICS": raw})
    assert settings.mqtt.priority_topics == expected


@pytest.mark.parametrize("raw", ["alert/#/x", "alert/#x", "sensor/a+/smoke", "$SYS/#"])
def test_bad_priority_topics_name_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="NOC_MQTT_PRIORITY_TOPICS"):
        load_settings({"NOC_MQTT_PRIORITY_TOPICS": raw})


@pytest.mark.parametrize("raw", ["#", "guard/#", "guard/+/gps", "+/+/gps", "+/+/+", "alert/#,+/#"])
def test_priority_topics_must_leave_guard_positions_to_the_bulk_flow(raw: str) -> None:
    with pytest.raises(SettingsError, match="matches guard positions"):
        load_settings({"NOC_MQTT_PRIORITY_TOPICS": raw})
