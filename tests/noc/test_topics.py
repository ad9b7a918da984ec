"""MQTT topic filters as one regex (``noc.topics``), against a table and against paho."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from noc.topics import filter_matcher


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
