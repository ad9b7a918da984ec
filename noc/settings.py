"""The one place that reads the environment.

Every setting is a ``NOC_*`` environment variable, declared once below with its type, default
and meaning. :func:`load_settings` validates all of them eagerly and raises
:class:`~noc.errors.SettingsError` naming the first bad variable. Nothing else in the project
reads ``os.environ``; components receive the (frozen) settings objects they need.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

from noc.domain import SEVERITIES
from noc.errors import SettingsError
from noc.topics import filter_matcher

T = TypeVar("T")


def _env(name: str, default: Any, doc: str, parse: Callable[[str], Any] | None = None) -> Any:
    """Declare a setting: dataclass field with its env var name, doc and parser as metadata."""
    return field(default=default, metadata={"env": name, "doc": doc, "parse": parse})


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be a number >= 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port (1-65535)")
    return value


def _port_or_zero(raw: str) -> int:
    value = int(raw)
    if not 0 <= value < 65536:
        raise ValueError("must be a TCP port (1-65535), or 0 to disable")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number > 0")
    return value


def _ws_path(raw: str) -> str:
    if not raw.startswith("/") or "?" in raw or " " in raw:
        raise ValueError("must be an absolute URL path like /ws")
    return raw


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _postgres_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in {"postgresql", "postgres"} or not (parts.hostname or parts.path):
        raise ValueError("expected a URL like postgresql://user@127.0.0.1:5432/noc")
    return raw


def _severity(raw: str) -> str:
    if raw not in SEVERITIES:
        raise ValueError(f"must be one of {', '.join(SEVERITIES)}")
    return raw


def _log_level(raw: str) -> str:
    upper = raw.upper()
    if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return upper


def _topic_template(raw: str) -> str:
    if "{device_id}" not in raw:
        raise ValueError("must contain {device_id}")
    return raw


def _topic_filters(raw: str) -> tuple[str, ...]:
    filters = tuple(f.strip() for f in raw.split(",") if f.strip())
    for f in filters:
        levels = f.split("/")
        if (
            f.startswith("$")
            or "#" in levels[:-1]
            or any(("#" in level or "+" in level) and len(level) > 1 for level in levels)
        ):
            raise ValueError(f"{f!r} is not an MQTT topic filter like alert/# or sensor/+/smoke")
    return filters


def _priority_topics(raw: str) -> tuple[str, ...]:
    filters = _topic_filters(raw)
    for f in filters:
        matcher = filter_matcher((f,))
        if matcher is not None and matcher.match("guard/g/gps"):
            raise ValueError(
                f"{f!r} matches guard positions, which the geofence needs in the bulk flow; "
                "name the priority topics, e.g. alert/#,sensor/+/smoke"
            )
    return filters


@dataclass(frozen=True)
class DatabaseSettings:
    """PostgreSQL / TimescaleDB connection."""

    url: str = _env(
        "NOC_DATABASE_URL",
        "postgresql://postgres@127.0.0.1:5432/noc",
        "PostgreSQL URL of the TimescaleDB database.",
        _postgres_url,
    )
    pool_size: int = _env(
        "NOC_DATABASE_POOL_SIZE", 4, "Connections per process pool.", _positive_int
    )


@dataclass(frozen=True)
class MqttSettings:
    """Broker connection and topics."""

    host: str = _env("NOC_MQTT_HOST", "127.0.0.1", "MQTT broker host.")
    port: int = _env("NOC_MQTT_PORT", 1883, "MQTT broker port.", _port)
    username: str = _env("NOC_MQTT_USERNAME", "", "Broker user name (empty: anonymous).")
    password: str = _env("NOC_MQTT_PASSWORD", "", "Broker password.")
    client_id: str = _env(
        "NOC_MQTT_CLIENT_ID",
        "noc-ingest",
        "Fixed client id prefix of the ingest flow's persistent sessions (partition i uses "
        "PREFIX-i). Changing it abandons the broker-side queue of the old id.",
    )
    partitions: int = _env(
        "NOC_MQTT_PARTITIONS",
        1,
        "Number of MQTT consumer partitions (each a persistent session with its own client id, "
        "sharing the subscriptions through $share/GROUP/).",
        _positive_int,
    )
    keepalive_s: int = _env("NOC_MQTT_KEEPALIVE", 30, "MQTT keepalive in seconds.", _positive_int)
    priority_topics: tuple[str, ...] = _env(
        "NOC_MQTT_PRIORITY_TOPICS",
        ("alert/#",),
        "Comma-separated topic filters whose messages overtake queued traffic: consumed by the "
        "priority lane, a process of its own started by the flow, and stored in their own "
        "small transactions (empty: no priority lane). Must not match guard positions.",
        _priority_topics,
    )
    commands_topic: str = _env(
        "NOC_TOPIC_COMMANDS",
        "device/{device_id}/commands",
        "Outbound topic template for device commands (QoS 1).",
        _topic_template,
    )


@dataclass(frozen=True)
class IngestSettings:
    """Ingest flow batching and registry refresh."""

    batch_max_rows: int = _env(
        "NOC_BATCH_MAX_ROWS",
        250,
        "Most messages the source hands over per batch (per worker round). Storage coalesces "
        "batches into larger transactions (NOC_STORE_MAX_ROWS).",
        _positive_int,
    )
    switch_interval_ms: float = _env(
        "NOC_FLOW_SWITCH_INTERVAL_MS",
        1.0,
        "Python thread switch interval in the flow process, ms (sys.setswitchinterval): how "
        "long the worker may wait for the interpreter while the MQTT reader and the "
        "background writer run. Lower favours alert latency; Python's default is 5.",
        _positive_float,
    )
    store_max_rows: int = _env(
        "NOC_STORE_MAX_ROWS",
        5000,
        "Most queued messages the background writer stores in one transaction.",
        _positive_int,
    )
    batch_max_wait_ms: int = _env(
        "NOC_BATCH_MAX_WAIT_MS", 5, "Poll interval of an idle MQTT source, ms.", _positive_int
    )
    registry_refresh_s: float = _env(
        "NOC_REGISTRY_REFRESH_S",
        2.0,
        "How often the flow checks whether the registry changed, seconds.",
        _non_negative_float,
    )
    metrics_port: int = _env(
        "NOC_FLOW_METRICS_PORT",
        9464,
        "Port of the flow's Prometheus /metrics on 127.0.0.1 (0 disables it).",
        _port_or_zero,
    )
    priority_metrics_port: int = _env(
        "NOC_PRIORITY_METRICS_PORT",
        9466,
        "Port of the priority lane's Prometheus /metrics on 127.0.0.1 (0 disables it).",
        _port_or_zero,
    )
    priority_poll_ms: float = _env(
        "NOC_PRIORITY_POLL_MS",
        1.0,
        "Poll interval of the priority lane's idle MQTT source, ms: the most a priority "
        "message waits for the lane's worker to look.",
        _positive_float,
    )


@dataclass(frozen=True)
class GeofenceSettings:
    """Geofence hysteresis."""

    confirm_fixes: int = _env(
        "NOC_GEOFENCE_CONFIRM_FIXES",
        3,
        "Consecutive confident fixes needed to raise or clear a violation.",
        _positive_int,
    )
    confirm_seconds: float = _env(
        "NOC_GEOFENCE_CONFIRM_SECONDS",
        30.0,
        "Least time a guard must be confidently outside (or back inside), seconds.",
        _non_negative_float,
    )
    violation_severity: str = _env(
        "NOC_GEOFENCE_SEVERITY", "critical", "Severity of a geofence violation alert.", _severity
    )


@dataclass(frozen=True)
class WindowSettings:
    """Windows of the ingest flow: device heartbeat, telemetry trends, man-down."""

    offline_intervals: int = _env(
        "NOC_OFFLINE_INTERVALS",
        3,
        "A device is offline after this many of its reporting intervals (registry) without a "
        "message, measured on the flow's clock; its next message resolves the alert.",
        _positive_int,
    )
    lateness_s: float = _env(
        "NOC_WINDOW_LATENESS_S",
        30.0,
        "Bounded lateness of the event-time windows (trends, man-down), seconds: a reading may "
        "arrive this much later than the newest one and still count; decisions wait this long.",
        _non_negative_float,
    )
    shards: int = _env(
        "NOC_WINDOW_SHARDS",
        1,
        "Shards of the windows step: each holds the windows of its devices under one Bytewax "
        "key, and Bytewax routes keys to workers by hash; with several workers (-w) use a few "
        "shards per worker.",
        _positive_int,
    )
    snapshots: bool = _env(
        "NOC_WINDOW_SNAPSHOTS",
        False,
        "Give the window state to Bytewax snapshots at every epoch. Only useful when the flow "
        "runs with Bytewax recovery (-r); otherwise state is rebuilt from the database.",
        _bool,
    )
    release_step_s: float = _env(
        "NOC_WINDOW_RELEASE_STEP_S",
        1.0,
        "Readings due for release are released together on this grid of the flow's clock, "
        "seconds (0: each at its own instant). Decisions are the same; the flow wakes a device's "
        "windows at most once per step instead of once per reading.",
        _non_negative_float,
    )
    battery_drain_per_hour: float = _env(
        "NOC_BATTERY_DRAIN_PER_HOUR",
        20.0,
        "Battery drain (percentage points per hour, resistant-line slope over the window) that "
        "raises battery_drain; it clears below 80 % of this.",
        _positive_float,
    )
    battery_window_s: float = _env(
        "NOC_BATTERY_WINDOW_S",
        900.0,
        "Sliding event-time window of the battery drain rate, seconds (at least 600).",
        _positive_float,
    )
    temperature_high: float = _env(
        "NOC_TEMPERATURE_HIGH",
        50.0,
        "Temperature (°C, telemetry or temperature sensors) that raises temperature_sustained "
        "when exceeded for NOC_TEMPERATURE_SUSTAINED_S; the first reading at or below clears it.",
        float,
    )
    temperature_sustained_s: float = _env(
        "NOC_TEMPERATURE_SUSTAINED_S",
        300.0,
        "How long readings must stay above NOC_TEMPERATURE_HIGH, seconds (event time).",
        _positive_float,
    )
    man_down_radius_m: float = _env(
        "NOC_MAN_DOWN_RADIUS_M",
        25.0,
        "A guard on shift whose fixes stay within this radius (metres) for "
        "NOC_MAN_DOWN_MINUTES raises a high man_down alert; moving further resolves it.",
        _positive_float,
    )
    man_down_minutes: float = _env(
        "NOC_MAN_DOWN_MINUTES",
        10.0,
        "Minutes without moving more than NOC_MAN_DOWN_RADIUS_M before man_down (event time).",
        _positive_float,
    )

    def __post_init__(self) -> None:
        if self.battery_window_s < 600:
            raise SettingsError(f"NOC_BATTERY_WINDOW_S={self.battery_window_s!r}: must be >= 600")
        if not abs(self.temperature_high) < float("inf"):  # also rejects nan
            raise SettingsError(f"NOC_TEMPERATURE_HIGH={self.temperature_high!r}: must be finite")


@dataclass(frozen=True)
class ApiSettings:
    """NOC API and WebSocket."""

    host: str = _env("NOC_API_HOST", "127.0.0.1", "Address the API listens on.")
    port: int = _env("NOC_API_PORT", 8000, "Port the API listens on.", _port)
    token_secret: str = _env(
        "NOC_TOKEN_SECRET",
        "dev-insecure-change-me",
        "Secret that signs bearer tokens. Set a long random value in production.",
    )
    ws_path: str = _env("NOC_WS_PATH", "/ws", "WebSocket path.", _ws_path)
    token_ttl_hours: float = _env(
        "NOC_TOKEN_TTL_HOURS",
        12.0,
        "Default lifetime of a token issued by `noc token`, hours.",
        _positive_float,
    )
    ws_queue_limit: int = _env(
        "NOC_WS_QUEUE_LIMIT",
        1000,
        "Events queued per WebSocket client; a client that falls further behind is sent "
        '{"type": "overflow"} and closed (it resumes with its last event id).',
        _positive_int,
    )
    ws_retention_hours: float = _env(
        "NOC_WS_RETENTION_HOURS",
        24.0,
        "How long WebSocket events are kept for resuming clients, hours (the API deletes "
        "older ones).",
        _positive_float,
    )


@dataclass(frozen=True)
class NotifySettings:
    """Notification dispatcher: outbox draining, retries, rate limits, escalation."""

    poll_interval_s: float = _env(
        "NOC_NOTIFY_POLL_S",
        1.0,
        "How often an idle dispatcher looks for due notifications, seconds.",
        _positive_float,
    )
    batch: int = _env(
        "NOC_NOTIFY_BATCH",
        20,
        "Outbox rows a dispatcher claims per transaction (sent one by one).",
        _positive_int,
    )
    lease_s: float = _env(
        "NOC_NOTIFY_LEASE_S",
        120.0,
        "Lease on claimed rows, seconds: a dispatcher that dies holds them this long before "
        "another sends them. Must exceed a batch's worst-case send time.",
        _positive_float,
    )
    max_attempts: int = _env(
        "NOC_NOTIFY_MAX_ATTEMPTS",
        5,
        "Delivery attempts per notification before it is marked failed.",
        _positive_int,
    )
    retry_base_s: float = _env(
        "NOC_NOTIFY_RETRY_BASE_S",
        10.0,
        "Delay before the first retry, seconds; doubles with each further attempt.",
        _positive_float,
    )
    retry_max_s: float = _env(
        "NOC_NOTIFY_RETRY_MAX_S",
        900.0,
        "Longest delay between two attempts, seconds.",
        _positive_float,
    )
    rate_window_s: float = _env(
        "NOC_NOTIFY_RATE_WINDOW_S",
        60.0,
        "Sliding window of the per-recipient rate limits, seconds.",
        _positive_float,
    )
    sms_per_window: int = _env(
        "NOC_NOTIFY_SMS_PER_WINDOW",
        10,
        "Most SMS per recipient (number) per window; more are suppressed and summarised.",
        _positive_int,
    )
    email_per_window: int = _env(
        "NOC_NOTIFY_EMAIL_PER_WINDOW",
        30,
        "Most e-mails per recipient per window; more are suppressed and summarised.",
        _positive_int,
    )
    push_per_window: int = _env(
        "NOC_NOTIFY_PUSH_PER_WINDOW",
        30,
        "Most push notifications per recipient per window; more are suppressed and summarised.",
        _positive_int,
    )
    escalation_delay_s: float = _env(
        "NOC_NOTIFY_ESCALATION_DELAY_S",
        300.0,
        "A critical alert still unacknowledged this long after it opened (or after its last "
        "escalation) is sent to the next recipient tier, seconds.",
        _positive_float,
    )
    metrics_port: int = _env(
        "NOC_NOTIFY_METRICS_PORT",
        9465,
        "Port of the dispatcher's Prometheus /metrics on 127.0.0.1 (0 disables it).",
        _port_or_zero,
    )


@dataclass(frozen=True)
class Settings:
    """All settings, grouped."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    geofence: GeofenceSettings = field(default_factory=GeofenceSettings)
    windows: WindowSettings = field(default_factory=WindowSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    log_level: str = _env("NOC_LOG_LEVEL", "INFO", "Log level.", _log_level)


_GROUPS: tuple[tuple[str, type[Any]], ...] = (
    ("database", DatabaseSettings),
    ("mqtt", MqttSettings),
    ("ingest", IngestSettings),
    ("geofence", GeofenceSettings),
    ("windows", WindowSettings),
    ("api", ApiSettings),
    ("notify", NotifySettings),
)


def _parse_group(cls: type[T], environ: Mapping[str, str]) -> T:
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        name = f.metadata.get("env")
        if name is None or name not in environ:
            continue
        raw = environ[name]
        parse: Callable[[str], Any] = f.metadata["parse"] or str
        try:
            values[f.name] = parse(raw)
        except ValueError as exc:
            reason = str(exc)
            if reason.startswith(("invalid literal", "could not convert")):
                reason = "must be a number"
            raise SettingsError(f"{name}={raw!r}: {reason}") from None
    return cls(**values)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every ``NOC_*`` variable; raise SettingsError naming the bad one."""
    env = os.environ if environ is None else environ
    known = {name for name, _doc, _default in describe()}
    for name in env:
        if name.startswith("NOC_") and name not in known:
            raise SettingsError(f"{name}: unknown setting (see `noc config`)")
    groups = {attr: _parse_group(cls, env) for attr, cls in _GROUPS}
    top = _parse_group(_TopLevel, env)
    return Settings(**groups, log_level=top.log_level)


@dataclass(frozen=True)
class _TopLevel:
    log_level: str = _env("NOC_LOG_LEVEL", "INFO", "Log level.", _log_level)


def describe() -> list[tuple[str, str, str]]:
    """Every setting as (variable, doc, default) for `noc config` and the docs."""
    rows: list[tuple[str, str, str]] = []
    groups: tuple[tuple[str, type[Any]], ...] = (*_GROUPS, ("", _TopLevel))
    for _attr, cls in groups:
        for f in fields(cls):
            if "env" in f.metadata:
                default = f.default
                shown = ",".join(default) if isinstance(default, tuple) else str(default)
                rows.append((f.metadata["env"], f.metadata["doc"], shown))
    return rows
