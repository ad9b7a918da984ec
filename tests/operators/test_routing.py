"""Routing: default table (DESIGN.md §4.3) and per-tenant overrides."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from operators.errors import ConfigError
from operators.routing import (
    CHANNELS,
    AlertInfo,
    Recipient,
    RoutingConfig,
    notification_text,
    plan_notifications,
    summary_text,
)


@pytest.mark.parametrize(
    ("severity", "channels"),
    [
        ("critical", ("sms", "email", "push")),
        ("high", ("email", "push")),
        ("medium", ("email",)),
        ("low", ()),
        ("info", ()),
        ("unheard-of", ()),
    ],
)
def test_default_routes(severity: str, channels: tuple[str, ...]) -> None:
    assert RoutingConfig().channels_for(severity) == channels


@pytest.mark.parametrize(
    ("override", "severity", "channels"),
    [
        ({"high": ["sms", "email"]}, "high", ("sms", "email")),
        ({"high": ["sms", "email"]}, "critical", ("sms", "email", "push")),  # others keep defaults
        ({"critical": []}, "critical", ()),
        ({"low": ["push"]}, "low", ("push",)),
        ({"medium": ["email", "email"]}, "medium", ("email",)),  # duplicates collapse
        ({}, "medium", ("email",)),
    ],
)  # fmt: skip
def test_overrides(override: dict[str, Any], severity: str, channels: tuple[str, ...]) -> None:
    assert RoutingConfig().with_overrides(override).channels_for(severity) == channels


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["sms"], "must be an object"),
        ({"urgent": ["sms"]}, "unknown severity 'urgent'"),
        ({"high": "sms"}, "high must map to a list of channels"),
        ({"high": ["pager"]}, "unknown channel 'pager'"),
        ({"high": None}, "high must map to a list"),
    ],
)
def test_invalid_override_is_a_config_error(override: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RoutingConfig().with_overrides(override)
    assert message in str(info.value)


def test_every_severity_needs_a_route() -> None:
    with pytest.raises(ConfigError, match="no entry for severity info"):
        RoutingConfig({"critical": (), "high": (), "medium": (), "low": ()})


def test_routes_are_read_only() -> None:
    config = RoutingConfig()
    with pytest.raises(TypeError):
        config.routes["low"] = CHANNELS  # type: ignore[index]


ALERT = AlertInfo(7, 1, "door-3", "door_after_hours", "high", "Door opened", 4, None, 2,
                  datetime(2026, 11, 1, 22, 0, tzinfo=UTC))  # fmt: skip


def test_plan_reaches_every_recipient_of_the_tier_and_names_missing_channels() -> None:
    recipients = [
        Recipient(1, 1, "sms", 1),
        Recipient(2, 1, "sms", 1),
        Recipient(3, 1, "email", 2),  # other tier
        Recipient(4, 2, "push", 1),  # other tenant
    ]
    rows, missing = plan_notifications(ALERT, ("sms", "email", "push"), recipients, "alert", 1)
    assert [(r.recipient_id, r.channel, r.kind, r.tier) for r in rows] == [
        (1, "sms", "alert", 1),
        (2, "sms", "alert", 1),
    ]
    assert missing == ["email", "push"]
    rows, missing = plan_notifications(ALERT, ("email",), recipients, "escalation", 2)
    assert [(r.recipient_id, r.kind, r.tier) for r in rows] == [(3, "escalation", 2)]
    assert missing == []


def test_texts() -> None:
    assert notification_text(ALERT, "escalation", 2, "Unacknowledged.") == (
        "ESCALATION tier 2: [HIGH] door after hours - door-3",
        "Door opened\nalert #7, source door-3, site 4\nfirst seen 2026-11-01T22:00:00+00:00\n"
        "Unacknowledged.",
    )
    title, body = summary_text([f"t{i}" for i in range(12)])
    assert title == "12 more alerts suppressed"
    assert (
        body == "12 more alerts suppressed: t0; t1; t2; t3; t4; t5; t6; t7; t8; t9; ... and 2 more"
    )
    assert summary_text(["x"]) == ("1 more alert suppressed", "1 more alert suppressed: x")
