"""Bytewax sink: stores each batch in one transaction, then lets the source acknowledge it.

Buffering is Bytewax's (each ``write_batch`` gets what arrived since the last one); I/O is the
:class:`~storage.writer.BatchWriter`. While the database is unavailable the sink retries with
backoff and does not return, so the source is not polled: new messages stay with the broker
(back-pressure), nothing is acknowledged, nothing is lost. A batch the database rejects for a
non-transient reason is retried item by item; an item that still fails becomes a dead letter
with reason ``storage_rejected`` so the rest of the batch is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows import metrics
from flows.acks import commit
from flows.commands import CommandPublisher
from flows.envelope import Envelope
from operators.decode import dead_letter
from operators.records import DeadLetter, DerivedAlerts, Stored
from storage.errors import DatabaseUnavailable, StorageError
from storage.writer import BatchWriter, WriteResult

log = logging.getLogger(__name__)


class StorageSink(DynamicSink[Envelope]):
    """One :class:`BatchWriter` (own connection) per worker."""

    def __init__(
        self,
        database_url: str,
        commands: Callable[[], CommandPublisher] | None = None,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._url = database_url
        self._commands = commands
        self._max_backoff_s = max_backoff_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StoragePartition:
        del step_id, worker_count
        publisher = self._commands() if self._commands else None
        writer = BatchWriter(self._url, application_name=f"noc-ingest-{worker_index}")
        return _StoragePartition(writer, publisher, self._max_backoff_s)


class _StoragePartition(StatelessSinkPartition[Envelope]):
    def __init__(
        self, writer: BatchWriter, publisher: CommandPublisher | None, max_backoff_s: float
    ) -> None:
        self._writer = writer
        self._publisher = publisher
        self._max_backoff_s = max_backoff_s

    def write_batch(self, items: list[Envelope]) -> None:
        stored = [e.stored_item for e in items]
        started = time.perf_counter()
        result = self._write(stored, items)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(items))
        commit(e.token for e in items)
        for table, n in result.inserted.items():
            metrics.ROWS_INSERTED.labels(table).inc(n)
        metrics.DUPLICATES.inc(result.duplicates)
        for a in result.alerts:
            metrics.ALERTS.labels(a.alert_type, a.severity, str(a.opened).lower()).inc()
        if self._publisher is not None and result.commands:
            self._publisher.publish(result.commands)

    def _write(self, stored: list[Stored], items: list[Envelope]) -> WriteResult:
        backoff = 0.2
        while True:
            try:
                return self._writer.write(stored)
            except DatabaseUnavailable as exc:
                metrics.WRITE_RETRIES.labels("unavailable").inc()
                log.warning("database unavailable, retrying in %.1fs: %s", backoff, exc)
            except StorageError as exc:
                metrics.WRITE_RETRIES.labels("rejected").inc()
                log.error("batch rejected (%s); storing item by item", exc)
                try:
                    return self._write_one_by_one(stored, items)
                except DatabaseUnavailable as again:
                    log.warning("database unavailable during item-by-item write: %s", again)
            time.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    def _write_one_by_one(self, stored: list[Stored], items: list[Envelope]) -> WriteResult:
        total = WriteResult()
        for item, envelope in zip(stored, items, strict=True):
            try:
                result = self._writer.write([item])
            except DatabaseUnavailable:
                raise
            except StorageError as exc:
                if isinstance(item, DerivedAlerts):
                    log.error("derived alerts rejected by the database, dropped: %s", exc)
                    continue
                received = (
                    item.received_at if isinstance(item, DeadLetter) else item.record.received_at
                )
                letter = dead_letter(
                    envelope.topic, envelope.payload, received, "storage_rejected", str(exc),
                    tenant_id=0 if isinstance(item, DeadLetter) else item.tenant_id,
                )  # fmt: skip
                result = self._writer.write([letter])
            for table, n in result.inserted.items():
                total.inserted[table] = total.inserted.get(table, 0) + n
            total.duplicates += result.duplicates
            total.alerts.extend(result.alerts)
            total.commands.extend(result.commands)
        return total

    def close(self) -> None:
        self._writer.close()
        if self._publisher is not None:
            self._publisher.close()
