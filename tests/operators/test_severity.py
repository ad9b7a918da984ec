"""Severity rules, table-driven: one case per line (DESIGN.md §4.3)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest

from operators.errors import ConfigError
from operators.records import DeviceAlert, Enriched, Position, SensorReading, Telemetry
from operators.registry import SiteEntry
from operators.severity import SeverityConfig, is_open

T = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)  # a Monday, 12:00 UTC


def at(hh: int, mm: int = 0) -> datetime:
    return T.replace(hour=hh, minute=mm)


def alert(alert_type: str, severity: str | None = None, message: str = "") -> Enriched:
    rec = DeviceAlert("pb-1", alert_type, T, severity, message, 12.97, 77.59, "m", T)
    return Enriched(rec, tenant_id=1, site_id=3, device_id="pb-1")


def sensor(kind: str, value: float | None, state: str | None = None, ts: datetime = T) -> Enriched:
    return Enriched(SensorReading("s-1", kind, ts, value, state, "m", ts), tenant_id=1, site_id=3)


def telemetry(battery: float | None = 80.0, temperature: float | None = 25.0) -> Enriched:
    rec = Telemetry("d-1", T, battery, -60.0, temperature, "m", T)
    return Enriched(rec, tenant_id=1, device_id="d-1")


def site(opens: time | None, closes: time | None, tz: str = "UTC") -> SiteEntry:
    return SiteEntry(3, 1, "HQ", tz, opens, closes)


OFFICE = site(time(8), time(18))
NIGHT = site(time(22), time(6))  # wraps past midnight
KOLKATA = site(time(9), time(17), "Asia/Kolkata")  # UTC+05:30


def summary(
    item: Enriched, s: SiteEntry | None = None, config: SeverityConfig | None = None
) -> list[tuple[str, str, str]]:
    rules = (config or SeverityConfig()).build()
    return [(c.alert_type, c.severity, c.source_id) for c in rules.evaluate(item, s)]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (alert("panic"), [("panic", "critical", "pb-1")]),
        (alert("panic", "low"), [("panic", "critical", "pb-1")]),  # a device never lowers
        (alert("duress"), [("duress", "critical", "pb-1")]),
        (alert("man_down"), [("man_down", "high", "pb-1")]),
        (alert("man_down", "critical"), [("man_down", "critical", "pb-1")]),  # but may raise
        (alert("test"), [("test", "info", "pb-1")]),
        (alert("weird_thing"), [("weird_thing", "high", "pb-1")]),  # unknown type
        (sensor("smoke", 1), [("smoke", "critical", "s-1")]),
        (sensor("smoke", None, "alarm"), [("smoke", "critical", "s-1")]),
        (sensor("smoke", None, "DETECTED"), [("smoke", "critical", "s-1")]),  # any case
        (sensor("smoke", 0, "clear"), []),
        (sensor("temperature", 61), [("temperature_out_of_range", "high", "s-1")]),
        (sensor("temperature", 60), []),  # thresholds are exclusive
        (sensor("temperature", -21), [("temperature_out_of_range", "high", "s-1")]),
        (sensor("temperature", -20), []),
        (sensor("motion", 1), []),
        (telemetry(battery=25), []),
        (telemetry(battery=20), []),
        (telemetry(battery=19.9), [("low_battery", "medium", "d-1")]),
        (telemetry(battery=10), [("low_battery", "medium", "d-1")]),
        (telemetry(battery=9), [("low_battery", "high", "d-1")]),
        (telemetry(battery=0), [("low_battery", "high", "d-1")]),
        (telemetry(battery=None), []),
        (telemetry(temperature=75), [("device_temperature", "high", "d-1")]),
        (telemetry(battery=5, temperature=-30), [("low_battery", "high", "d-1"), ("device_temperature", "high", "d-1")]),
        (Enriched(Position(7, T, 12.9, 77.5, 5.0, 1, "m", T), tenant_id=1), []),
    ],
)  # fmt: skip
def test_rules(item: Enriched, expected: list[tuple[str, str, str]]) -> None:
    assert summary(item) == expected


@pytest.mark.parametrize(
    ("s", "ts", "state", "value", "alerts"),
    [
        (OFFICE, at(12), "open", 1, False),  # during hours
        (OFFICE, at(7, 59), "open", 1, True),
        (OFFICE, at(8), "open", 1, False),  # opening time is inside
        (OFFICE, at(18), "open", 1, True),  # closing time is outside
        (OFFICE, at(23), "closed", 0, False),  # closing a door is fine
        (OFFICE, at(23), None, 1, True),  # no state: value 1 = open
        (OFFICE, at(23), "OPEN", None, True),  # any case
        (NIGHT, at(23), "open", 1, False),  # 22:00-06:00 wraps midnight
        (NIGHT, at(3), "open", 1, False),
        (NIGHT, at(6), "open", 1, True),
        (NIGHT, at(12), "open", 1, True),
        (KOLKATA, at(4), "open", 1, False),  # 09:30 in Kolkata
        (KOLKATA, at(3, 29), "open", 1, True),  # 08:59 there
        (KOLKATA, at(12), "open", 1, True),  # 17:30 there
        (site(None, None), at(3), "open", 1, False),  # no hours: always staffed
        (site(time(0), time(0)), at(3), "open", 1, False),  # 00:00-00:00: around the clock
        (None, at(3), "open", 1, False),  # site unknown: no rule
    ],
)  # fmt: skip
def test_door_outside_site_hours(
    s: SiteEntry | None, ts: datetime, state: str | None, value: float | None, alerts: bool
) -> None:
    found = summary(sensor("door", value, state, ts), s)
    assert found == ([("door_after_hours", "high", "s-1")] if alerts else [])


def test_unknown_site_timezone_is_taken_as_utc() -> None:
    s = site(time(8), time(18), "Mars/Olympus_Mons")
    plus5 = timezone(timedelta(hours=5))
    # The reading's own offset must not be taken for the site's: 06:00 UTC is 11:00 at +05:00.
    assert is_open(s, datetime(2026, 11, 2, 6, 0, tzinfo=UTC).astimezone(plus5)) is False
    assert is_open(s, datetime(2026, 11, 2, 16, 0, tzinfo=UTC).astimezone(plus5)) is True


def test_device_alert_message_defaults_to_its_type() -> None:
    rules = SeverityConfig().build()
    [c] = rules.evaluate(alert("man_down"))
    assert c.message == "man down from pb-1"
    assert (c.lat, c.lon, c.site_id, c.device_id) == (12.97, 77.59, 3, "pb-1")


@pytest.mark.parametrize(
    ("overrides", "item", "expected"),
    [
        ({"battery_medium_below": 30}, telemetry(battery=25), [("low_battery", "medium", "d-1")]),
        ({"battery_high_below": 20, "battery_medium_below": 20}, telemetry(battery=15), [("low_battery", "high", "d-1")]),
        ({"alert_type_severity": {"man_down": "critical"}}, alert("man_down"), [("man_down", "critical", "pb-1")]),
        ({"alert_type_severity": {"man_down": "critical"}}, alert("panic"), [("panic", "critical", "pb-1")]),  # merged
        ({"honour_device_severity": False}, alert("man_down", "critical"), [("man_down", "high", "pb-1")]),
        ({"unknown_alert_type_severity": "low"}, alert("weird"), [("weird", "low", "pb-1")]),
        ({"temperature_high_above": 40}, sensor("temperature", 45), [("temperature_out_of_range", "high", "s-1")]),
        ({"smoke_severity": "high"}, sensor("smoke", 1), [("smoke", "high", "s-1")]),
        ({}, alert("panic"), [("panic", "critical", "pb-1")]),
    ],
)  # fmt: skip
def test_tenant_overrides(
    overrides: dict[str, Any], item: Enriched, expected: list[tuple[str, str, str]]
) -> None:
    assert summary(item, config=SeverityConfig().with_overrides(overrides)) == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"no_such_rule": 1}, "unknown severity rule setting(s): no_such_rule"),
        ({"smoke_severity": "urgent"}, "smoke_severity must be one of"),
        ({"alert_type_severity": {"panic": "urgent"}}, "alert type 'panic': unknown severity 'urgent'"),
        ({"alert_type_severity": ["panic"]}, "alert_type_severity must map"),
        ({"battery_high_below": 30}, "battery_high_below must be <= battery_medium_below"),
        ({"temperature_low_below": 70}, "temperature_low_below must be < temperature_high_above"),
        ({"battery_medium_below": "20"}, "battery_medium_below must be a number"),
        ({"battery_medium_below": True}, "battery_medium_below must be a number"),
        ({"temperature_high_above": float("nan")}, "temperature_high_above must be finite"),
        ({"honour_device_severity": "no"}, "honour_device_severity must be true or false"),
    ],
)  # fmt: skip
def test_invalid_override_is_a_config_error(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SeverityConfig().with_overrides(overrides)
    assert message in str(info.value)


def test_overrides_do_not_change_the_defaults() -> None:
    base = SeverityConfig()
    base.with_overrides({"alert_type_severity": {"panic": "high"}})
    assert base.alert_type_severity["panic"] == "critical"
    with pytest.raises(TypeError):
        base.alert_type_severity["panic"] = "low"  # type: ignore[index]
