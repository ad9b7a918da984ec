"""The MQTT source's pure parts: topic filters, partitions and their subscriptions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from flows.mqtt_source import (
    PRIORITY_PART,
    MqttSource,
    MqttSourceConfig,
    filter_matcher,
    outbound_matcher,
)


def config(**kw: object) -> MqttSourceConfig:
    return MqttSourceConfig(host="127.0.0.1", port=1883, client_id_prefix="noc", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("filters", "topic", "matches"),
    [
        (("alert/#",), "alert/panic/pb-1", True),
        (("alert/#",), "alert", True),
        (("alert/#",), "alerts/panic/pb-1", False),
        (("alert/#",), "device/alert/x", False),
        (("sensor/+/smoke",), "sensor/s-1/smoke", True),
        (("sensor/+/smoke",), "sensor/s-1/door", False),
        (("sensor/+/smoke",), "sensor/a/b/smoke", False),
        (("a.b/#",), "axb/c", False),  # regex characters are literal
        (("#",), "anything/at/all", True),
        (("alert/#", "sensor/+/smoke"), "sensor/x/smoke", True),
    ],
)
def test_filter_matcher(filters: tuple[str, ...], topic: str, matches: bool) -> None:
    matcher = filter_matcher(filters)
    assert matcher is not None
    assert bool(matcher.match(topic)) is matches


def test_no_filters_no_matcher() -> None:
    assert filter_matcher(()) is None


_LEVEL = st.sampled_from(["alert", "sensor", "a.b", "x", "", "smoke", "pb-1"])


@given(
    st.lists(st.one_of(_LEVEL, st.just("+")), min_size=1, max_size=4),
    st.booleans(),
    st.lists(_LEVEL, min_size=1, max_size=5),
)
@settings(max_examples=300, deadline=None)
def test_filter_matcher_agrees_with_paho(
    levels: list[str], hash_tail: bool, topic: list[str]
) -> None:
    """paho's own matcher is the oracle for any filter of plain, ``+`` and trailing ``#``."""
    pattern = "/".join([*levels, "#"] if hash_tail else levels)
    name = "/".join(topic)
    matcher = filter_matcher((pattern,))
    assert matcher is not None
    assert bool(matcher.match(name)) is topic_matches_sub(pattern, name)


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
