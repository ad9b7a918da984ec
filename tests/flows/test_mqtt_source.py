"""The MQTT source's pure parts: partitions, their subscriptions, the outbound matcher."""

from __future__ import annotations

import pytest

from flows.mqtt_source import (
    PRIORITY_PART,
    MqttSource,
    MqttSourceConfig,
    outbound_matcher,
)


def config(**kw: object) -> MqttSourceConfig:
    return MqttSourceConfig(host="127.0.0.1", port=1883, client_id_prefix="noc", **kw)  # type: ignore[arg-type]


def test_outbound_matcher_recognises_the_command_topic_only() -> None:
    m = outbound_matcher("device/{device_id}/commands")
    assert m.match("device/gd-7/commands")
    assert not m.match("device/gd-7/telemetry")
    assert not m.match("device/a/b/commands")


@pytest.mark.parametrize(
    ("partitions", "priority", "priority_only", "parts"),
    [
        (1, ("alert/#",), False, ["0"]),
        (3, ("alert/#",), False, ["0", "1", "2"]),
        (1, (), False, ["0"]),
        (3, ("alert/#",), True, [PRIORITY_PART]),
    ],
)
def test_partitions(
    partitions: int, priority: tuple[str, ...], priority_only: bool, parts: list[str]
) -> None:
    c = config(partitions=partitions, priority_topics=priority, priority_only=priority_only)
    assert MqttSource(c).list_parts() == parts


def test_a_priority_only_source_needs_priority_topics() -> None:
    with pytest.raises(ValueError, match="priority topics"):
        config(priority_topics=(), priority_only=True)


@pytest.mark.parametrize(
    ("partitions", "part", "filters"),
    [
        (1, "0", ["#"]),
        (2, "1", ["$share/noc/#"]),
        (2, PRIORITY_PART, ["alert/#", "sensor/+/smoke"]),
    ],
)
def test_subscriptions(partitions: int, part: str, filters: list[str]) -> None:
    c = config(partitions=partitions, priority_topics=("alert/#", "sensor/+/smoke"))
    assert c.topic_filters(part) == filters
