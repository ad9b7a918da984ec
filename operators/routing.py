"""Notification routing: which channels an alert of a given severity goes to (DESIGN.md §4.3),
which recipients that means, and what the notification says.

Routing is data (:class:`RoutingConfig`): the default table, overridable per tenant with a
JSON object such as ``{"high": ["sms", "email"], "low": []}`` (stored in ``tenant_settings``
under the key :data:`ROUTING_KEY`). Severities not named in an override keep their default.
:func:`plan_notifications` turns an alert, its channels and the tenant's recipients into
outbox rows. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from noc.domain import SEVERITIES
from operators.errors import ConfigError

CHANNELS = ("sms", "email", "push")
ROUTING_KEY = "routing"
_SUMMARY_LINES = 10

_DEFAULT_ROUTES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"critical": ("sms", "email", "push"), "high": ("email", "push"), "medium": ("email",),
     "low": (), "info": ()}
)  # fmt: skip


@dataclass(frozen=True)
class RoutingConfig:
    """Severity -> channels. Every severity has an entry; an empty tuple = dashboard only."""

    routes: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _DEFAULT_ROUTES)

    def __post_init__(self) -> None:
        missing = [s for s in SEVERITIES if s not in self.routes]
        if missing:
            raise ConfigError(f"routing: no entry for severity {', '.join(missing)}")
        for severity, channels in self.routes.items():
            _check_entry(severity, channels)
        frozen = {s: tuple(dict.fromkeys(self.routes[s])) for s in SEVERITIES}
        object.__setattr__(self, "routes", MappingProxyType(frozen))

    def with_overrides(self, overrides: Any) -> RoutingConfig:
        """A copy with a tenant's overrides (``{severity: [channel, ...]}``) applied.

        Raises :class:`ConfigError` naming the bad entry when the override is not a JSON
        object of known severities to lists of known channels.
        """
        if not isinstance(overrides, Mapping):
            raise ConfigError("routing override must be an object {severity: [channels]}")
        routes = dict(self.routes)
        for severity, channels in overrides.items():
            _check_entry(severity, channels)
            routes[severity] = tuple(channels)
        return RoutingConfig(routes)

    def channels_for(self, severity: str) -> tuple[str, ...]:
        """The channels to notify for ``severity`` (unknown severity: none)."""
        return self.routes.get(severity, ())


def _check_entry(severity: Any, channels: Any) -> None:
    if severity not in SEVERITIES:
        raise ConfigError(f"routing: unknown severity {severity!r}")
    if isinstance(channels, str) or not isinstance(channels, list | tuple):
        raise ConfigError(f"routing: {severity} must map to a list of channels")
    for channel in channels:
        if channel not in CHANNELS:
            raise ConfigError(
                f"routing: {severity}: unknown channel {channel!r} (expected {', '.join(CHANNELS)})"
            )


@dataclass(frozen=True, slots=True)
class Recipient:
    recipient_id: int
    tenant_id: int
    channel: str
    tier: int


@dataclass(frozen=True, slots=True)
class AlertInfo:
    """The alert fields a notification's text is made of."""

    alert_id: int
    tenant_id: int
    source_id: str
    alert_type: str
    severity: str
    message: str
    site_id: int | None
    device_id: str | None
    count: int
    first_seen: datetime


@dataclass(frozen=True, slots=True)
class NewNotification:
    """One outbox row to insert."""

    tenant_id: int
    alert_id: int
    recipient_id: int
    channel: str
    kind: str
    tier: int
    title: str
    body: str


def plan_notifications(
    alert: AlertInfo,
    channels: Iterable[str],
    recipients: Sequence[Recipient],
    kind: str,
    tier: int,
    note: str = "",
) -> tuple[list[NewNotification], list[str]]:
    """Rows for every recipient of ``tier`` on each channel; and the channels that have none."""
    title, body = notification_text(alert, kind, tier, note)
    rows: list[NewNotification] = []
    missing: list[str] = []
    for channel in channels:
        matching = [
            r
            for r in recipients
            if r.tenant_id == alert.tenant_id and r.channel == channel and r.tier == tier
        ]
        if not matching:
            missing.append(channel)
        rows.extend(
            NewNotification(
                alert.tenant_id, alert.alert_id, r.recipient_id, channel, kind, tier, title, body
            )
            for r in matching
        )
    return rows, missing


def notification_text(alert: AlertInfo, kind: str, tier: int, note: str = "") -> tuple[str, str]:
    """(title, body) of an alert notification. Short enough for an SMS. Pure."""
    what = alert.alert_type.replace("_", " ")
    title = f"[{alert.severity.upper()}] {what} - {alert.source_id}"
    if kind == "escalation":
        title = f"ESCALATION tier {tier}: {title}"
    lines = [alert.message or what]
    where = [f"alert #{alert.alert_id}", f"source {alert.source_id}"]
    if alert.site_id is not None:
        where.append(f"site {alert.site_id}")
    lines.append(", ".join(where))
    lines.append(f"first seen {alert.first_seen.isoformat(timespec='seconds')}")
    if note:
        lines.append(note)
    return title, "\n".join(lines)


def summary_text(titles: Sequence[str]) -> tuple[str, str]:
    """(title, body) of the summary of suppressed notifications. Pure."""
    n = len(titles)
    noun = "alert" if n == 1 else "alerts"
    shown = list(titles[:_SUMMARY_LINES])
    if n > len(shown):
        shown.append(f"... and {n - len(shown)} more")
    return f"{n} more {noun} suppressed", f"{n} more {noun} suppressed: " + "; ".join(shown)
