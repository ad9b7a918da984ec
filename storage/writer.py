"""The batch writer: one transaction per batch, idempotent, with the alerts it causes.

``write(batch)`` stores every item of the batch (data rows and dead letters) with one
``INSERT ... SELECT FROM unnest(arrays) ... ON CONFLICT DO NOTHING`` per table (measured here
faster than COPY into temporary staging tables, whose per-transaction cost dominates at batch
sizes the broker's in-flight window allows; see benchmarks/bench_ingest.py), then folds the
alert candidates of the items that were *new* into the open alerts, queues their notifications
(outbox) and appends the WebSocket events, all in one transaction. A redelivered message
therefore neither stores a second row nor bumps an alert twice. Driver errors are raised as
:class:`~storage.errors.DatabaseUnavailable` (retry later) or
:class:`~storage.errors.StorageError`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from operators.records import (
    AlertCandidate,
    AlertResolution,
    DeadLetter,
    DerivedAlerts,
    DeviceCommand,
    Enriched,
    changes_alerts,
)
from storage.db import connect
from storage.errors import DatabaseUnavailable, StorageError
from storage.events import append_batch_events
from storage.outbox import enqueue_notifications
from storage.rows import (
    TABLES,
    FoldedAlert,
    columns_of,
    fold_alerts,
    rows_by_table,
    source_key,
)

log = logging.getLogger(__name__)

Item = Enriched | DeadLetter | DerivedAlerts


@dataclass(frozen=True)
class OpenedAlert:
    """An alert row touched by a batch: newly opened or folded into an open one."""

    alert_id: int
    tenant_id: int
    source_id: str
    alert_type: str
    severity: str
    count: int
    opened: bool


@dataclass
class WriteResult:
    """What one committed batch did."""

    inserted: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    alerts: list[OpenedAlert] = field(default_factory=list)
    commands: list[DeviceCommand] = field(default_factory=list)


_ALERT_UPSERT = """
INSERT INTO alerts (tenant_id, source_id, alert_type, severity, message, site_id, guard_id,
                    device_id, lat, lon, count, first_seen, last_seen, details)
SELECT * FROM unnest(%b::integer[], %b::text[], %b::text[], %b::text[], %b::text[],
                     %b::integer[], %b::integer[], %b::text[], %b::float8[], %b::float8[],
                     %b::bigint[], %b::timestamptz[], %b::timestamptz[], %b::jsonb[])
ON CONFLICT (tenant_id, source_id, alert_type) WHERE status IN ('new', 'acknowledged')
DO UPDATE SET
    count = alerts.count + EXCLUDED.count,
    last_seen = GREATEST(alerts.last_seen, EXCLUDED.last_seen),
    first_seen = LEAST(alerts.first_seen, EXCLUDED.first_seen),
    severity = CASE WHEN noc_severity_rank(EXCLUDED.severity) < noc_severity_rank(alerts.severity)
                    THEN EXCLUDED.severity ELSE alerts.severity END,
    message = CASE WHEN EXCLUDED.last_seen >= alerts.last_seen
                   THEN EXCLUDED.message ELSE alerts.message END,
    lat = COALESCE(EXCLUDED.lat, alerts.lat),
    lon = COALESCE(EXCLUDED.lon, alerts.lon),
    details = alerts.details || EXCLUDED.details
RETURNING alert_id, tenant_id, source_id, alert_type, severity, count, (xmax = 0) AS opened
"""

# System transitions are stamped with event time (the first occurrence), like closed_at.
_HISTORY_OPENED = """
INSERT INTO alert_history (ts, tenant_id, alert_id, action, actor, from_status, to_status, note)
SELECT a.first_seen, a.tenant_id, a.alert_id, 'opened', 'system', NULL, 'new', ''
FROM alerts a WHERE a.alert_id = ANY(%b::bigint[])
"""


_RESOLVE = """
WITH wanted AS (
    SELECT * FROM unnest(%b::integer[], %b::text[], %b::text[], %b::timestamptz[], %b::text[])
        AS w(tenant_id, source_id, alert_type, ts, note)
), open AS (
    SELECT a.alert_id, a.status AS from_status, w.ts, w.note
    FROM alerts a JOIN wanted w USING (tenant_id, source_id, alert_type)
    WHERE a.status IN ('new', 'acknowledged')
    FOR UPDATE OF a
)
UPDATE alerts a SET status = 'resolved', closed_by = 'system', closed_at = open.ts
FROM open WHERE a.alert_id = open.alert_id
RETURNING a.alert_id, a.tenant_id, a.source_id, a.alert_type, a.severity, a.count,
          open.from_status, open.ts, open.note
"""

_HISTORY_RESOLVED = """
INSERT INTO alert_history (ts, tenant_id, alert_id, action, actor, from_status, to_status, note)
SELECT ts, t, a, 'resolved', 'system', f, 'resolved', n
FROM unnest(%b::integer[], %b::bigint[], %b::text[], %b::timestamptz[], %b::text[])
    AS u(t, a, f, ts, n)
"""


class BatchWriter:
    """Writes batches through one connection it owns. Not thread-safe."""

    def __init__(self, url: str, application_name: str = "noc-writer") -> None:
        self._url = url
        self._application_name = application_name
        self._conn: psycopg.Connection | None = None

    def write(self, batch: Sequence[Item]) -> WriteResult:
        """Store the batch in one transaction; idempotent; raises on failure (nothing stored)."""
        if not batch:
            return WriteResult()
        try:
            conn = self._connection()
            with conn.transaction():
                return self._write(conn, batch)
        except psycopg.OperationalError as exc:
            self.close()
            raise DatabaseUnavailable(f"batch write failed: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            self.close()
            raise StorageError(f"batch write failed: {_first_line(exc)}") from exc

    def _write(self, conn: psycopg.Connection, batch: Sequence[Item]) -> WriteResult:
        result = WriteResult()
        new_keys: set[tuple[str, str, str]] = set()
        with conn.cursor() as cur:
            stored = [item for item in batch if not isinstance(item, DerivedAlerts)]
            for table, rows in rows_by_table(stored).items():
                spec = TABLES[table]
                cur.execute(
                    insert_rows_sql(table), columns_of(rows, len(spec.columns)), binary=True
                )
                inserted = cur.fetchall()
                new_keys.update((table, str(src), str(mid)) for src, mid in inserted)
                result.inserted[table] = len(inserted)
                result.duplicates += len(rows) - len(inserted)
            candidates: list[AlertCandidate] = []
            resolutions: list[AlertResolution] = []
            for item in batch:
                if changes_alerts(item) and (
                    isinstance(item, DerivedAlerts) or source_key(item) in new_keys
                ):
                    candidates.extend(item.alerts)
                    resolutions.extend(item.resolutions)
                    result.commands.extend(item.commands)
            if candidates:
                result.alerts = self._upsert_alerts(cur, fold_alerts(candidates))
                enqueue_notifications(cur, [a for a in result.alerts if a.opened])
            if resolutions:
                result.alerts.extend(self._resolve_alerts(cur, resolutions))
            # Last statement: it takes the event-order lock, held until commit.
            append_batch_events(cur, stored, result.alerts, new_keys)
        return result

    def _upsert_alerts(
        self, cur: psycopg.Cursor[Any], folded: list[FoldedAlert]
    ) -> list[OpenedAlert]:
        columns: list[list[Any]] = [[] for _ in range(14)]
        for f in folded:
            values = (
                f.tenant_id, f.source_id, f.alert_type, f.severity, f.message, f.site_id,
                f.guard_id, f.device_id, f.lat, f.lon, f.count, f.first_seen, f.last_seen,
                Jsonb(f.details),
            )  # fmt: skip
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        cur.execute(_ALERT_UPSERT, columns)
        touched = [OpenedAlert(*row) for row in cur.fetchall()]
        opened = [a for a in touched if a.opened]
        if opened:
            cur.execute(_HISTORY_OPENED, ([a.alert_id for a in opened],))
        return touched

    def _resolve_alerts(
        self, cur: psycopg.Cursor[Any], resolutions: list[AlertResolution]
    ) -> list[OpenedAlert]:
        """Resolve the open alerts whose condition ended, as ``system``, with history."""
        latest: dict[tuple[int, str, str], AlertResolution] = {}
        for r in resolutions:
            key = (r.tenant_id, r.source_id, r.alert_type)
            if key not in latest or r.ts >= latest[key].ts:
                latest[key] = r
        wanted = list(latest.values())
        cur.execute(
            _RESOLVE,
            (
                [r.tenant_id for r in wanted],
                [r.source_id for r in wanted],
                [r.alert_type for r in wanted],
                [r.ts for r in wanted],
                [r.note for r in wanted],
            ),
        )
        rows = cur.fetchall()
        if rows:
            cur.execute(
                _HISTORY_RESOLVED,
                ([r[1] for r in rows], [r[0] for r in rows], [r[6] for r in rows],
                 [r[7] for r in rows], [r[8] for r in rows]),
            )  # fmt: skip
        return [OpenedAlert(r[0], r[1], r[2], r[3], r[4], r[5], False) for r in rows]

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(
                self._url, autocommit=True, application_name=self._application_name
            )
        return self._conn

    def close(self) -> None:
        """Close the connection (idempotent); the next write reconnects."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


@functools.cache
def insert_rows_sql(table: str) -> sql.Composed:
    """``INSERT INTO t (cols) SELECT * FROM unnest(%b::type[], ...) ON CONFLICT DO NOTHING``."""
    spec = TABLES[table]
    arrays = sql.SQL(", ").join(
        sql.SQL("%b::{}[]").format(sql.SQL(t))
        for t in spec.types  # binary parameters: no text escaping
    )
    return sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT * FROM unnest({arrays})"
        " ON CONFLICT DO NOTHING RETURNING {src}::text, msg_id"
    ).format(
        table=sql.Identifier(table),
        cols=sql.SQL(", ").join(map(sql.Identifier, spec.columns)),
        arrays=arrays,
        src=sql.Identifier(spec.source_column),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
