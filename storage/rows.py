"""Pure mapping from records to table rows (no I/O). Column order matches ``TABLES``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from noc.domain import SEVERITY_RANK
from operators.records import (
    DeadLetter,
    DeviceAlert,
    Enriched,
    Position,
    SensorReading,
    SystemHealth,
    Telemetry,
)


@dataclass(frozen=True)
class TableSpec:
    """A target table: its columns with their SQL types, and the column naming the source."""

    name: str
    columns: tuple[str, ...]
    source_column: str
    types: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.columns) != len(self.types):
            raise ValueError(f"{self.name}: columns and types differ in length")


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "telemetry",
            ("ts", "tenant_id", "device_id", "battery", "signal", "temperature", "msg_id",
             "received_at"),
            "device_id",
            ("timestamptz", "integer", "text", "real", "real", "real", "text", "timestamptz"),
        ),
        TableSpec(
            "positions",
            ("ts", "tenant_id", "guard_id", "device_id", "site_id", "lat", "lon", "accuracy",
             "zone_status", "zone_id", "zone_distance_m", "msg_id", "received_at"),
            "guard_id",
            ("timestamptz", "integer", "integer", "text", "integer", "float8", "float8", "real",
             "text", "integer", "real", "text", "timestamptz"),
        ),
        TableSpec(
            "sensor_readings",
            ("ts", "tenant_id", "sensor_id", "site_id", "kind", "value", "state", "msg_id",
             "received_at"),
            "sensor_id",
            ("timestamptz", "integer", "text", "integer", "text", "float8", "text", "text",
             "timestamptz"),
        ),
        TableSpec(
            "device_alerts",
            ("ts", "tenant_id", "source_id", "alert_type", "severity", "message", "lat", "lon",
             "msg_id", "received_at"),
            "source_id",
            ("timestamptz", "integer", "text", "text", "text", "text", "float8", "float8", "text",
             "timestamptz"),
        ),
        TableSpec(
            "system_health",
            ("ts", "tenant_id", "component", "payload", "msg_id", "received_at"),
            "component",
            ("timestamptz", "integer", "text", "jsonb", "text", "timestamptz"),
        ),
        TableSpec(
            "dead_letters",
            ("received_at", "tenant_id", "topic", "reason", "detail", "payload_head",
             "payload_size", "msg_id"),
            "msg_id",
            ("timestamptz", "integer", "text", "text", "text", "bytea", "integer", "text"),
        ),
    )
}  # fmt: skip


def source_key(item: Enriched | DeadLetter) -> tuple[str, str, str]:
    """(table, source, msg_id): how the writer tells which items were new."""
    table, row = to_row(item)
    spec = TABLES[table]
    source = row[spec.columns.index(spec.source_column)]
    return table, str(source), item.msg_id if isinstance(item, DeadLetter) else item.record.msg_id


def to_row(item: Enriched | DeadLetter) -> tuple[str, tuple[Any, ...]]:
    """The table and row for one item. Pure."""
    if isinstance(item, DeadLetter):
        return "dead_letters", (
            item.received_at,
            item.tenant_id,
            item.topic,
            item.reason,
            item.detail,
            item.payload_head,
            item.payload_size,
            item.msg_id,
        )
    r = item.record
    t = item.tenant_id
    match r:
        case Telemetry():
            return "telemetry", (
                r.ts,
                t,
                r.device_id,
                r.battery,
                r.signal,
                r.temperature,
                r.msg_id,
                r.received_at,
            )
        case Position():
            return "positions", (
                r.ts, t, r.guard_id, item.device_id, item.site_id, r.lat, r.lon, r.accuracy,
                item.zone_status, item.zone_id, item.zone_distance_m, r.msg_id, r.received_at,
            )  # fmt: skip
        case SensorReading():
            return "sensor_readings", (
                r.ts, t, r.sensor_id, item.site_id, r.kind, r.value, r.state, r.msg_id,
                r.received_at,
            )  # fmt: skip
        case DeviceAlert():
            return "device_alerts", (
                r.ts, t, r.source_id, r.alert_type, r.severity, r.message, r.lat, r.lon,
                r.msg_id, r.received_at,
            )  # fmt: skip
        case SystemHealth():
            return "system_health", (
                r.ts,
                t,
                r.component,
                Jsonb(r.payload),
                r.msg_id,
                r.received_at,
            )
    raise TypeError(f"cannot store {type(r).__name__}")  # pragma: no cover


def columns_of(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Transpose rows into one list per column (for ``unnest`` array parameters). Pure."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def rows_by_table(items: Iterable[Enriched | DeadLetter]) -> dict[str, list[tuple[Any, ...]]]:
    """Group the rows of a batch by table, keeping arrival order within each table."""
    grouped: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for item in items:
        table, row = to_row(item)
        grouped[table].append(row)
    return dict(grouped)


@dataclass(frozen=True)
class FoldedAlert:
    """All candidates of one (tenant, source, type) in a batch, folded into one upsert row."""

    tenant_id: int
    source_id: str
    alert_type: str
    severity: str
    message: str
    site_id: int | None
    guard_id: int | None
    device_id: str | None
    lat: float | None
    lon: float | None
    count: int
    first_seen: Any
    last_seen: Any
    details: dict[str, Any]


def fold_alerts(candidates: Iterable[Any]) -> list[FoldedAlert]:
    """Fold alert candidates by (tenant, source, type): count, time span, highest severity.

    The database folds the result into the open alert the same way, so a burst of identical
    messages becomes one alert whose count is the number of messages. Pure; order-preserving.
    """
    folded: dict[tuple[int, str, str], FoldedAlert] = {}
    for c in candidates:
        key = (c.tenant_id, c.source_id, c.alert_type)
        prev = folded.get(key)
        if prev is None:
            folded[key] = FoldedAlert(
                c.tenant_id, c.source_id, c.alert_type, c.severity, c.message, c.site_id,
                c.guard_id, c.device_id, c.lat, c.lon, 1, c.ts, c.ts, dict(c.details),
            )  # fmt: skip
            continue
        newer = c.ts >= prev.last_seen
        severity = (
            c.severity
            if SEVERITY_RANK.get(c.severity, 9) < SEVERITY_RANK.get(prev.severity, 9)
            else prev.severity
        )
        folded[key] = FoldedAlert(
            prev.tenant_id, prev.source_id, prev.alert_type, severity,
            c.message if newer else prev.message,
            prev.site_id if prev.site_id is not None else c.site_id,
            prev.guard_id if prev.guard_id is not None else c.guard_id,
            prev.device_id if prev.device_id is not None else c.device_id,
            c.lat if newer and c.lat is not None else prev.lat,
            c.lon if newer and c.lon is not None else prev.lon,
            prev.count + 1, min(prev.first_seen, c.ts), max(prev.last_seen, c.ts),
            {**prev.details, **c.details} if newer else {**c.details, **prev.details},
        )  # fmt: skip
    return list(folded.values())
