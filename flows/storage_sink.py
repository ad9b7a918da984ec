"""Bytewax sink: stores every item in a committed transaction, then lets the source acknowledge it.

Two lanes, each with its own :class:`~storage.writer.BatchWriter` (own connection):

- **urgent**: items that change alerts (a panic, a geofence violation, a derived alert, a
  resolution). Stored in the worker thread, in a transaction of their own, before
  ``write_batch`` returns: a panic never waits behind telemetry rows or their commit. All alert
  changes go through this lane, so they are applied in the order the flow decided them.
- **bulk**: everything else (telemetry, positions, readings, dead letters). Handed to a
  background thread that stores whatever has queued up in one transaction, so the worker does
  not wait for bulk commits. The queue is bounded: when it is full ``write_batch`` blocks, the
  source is not polled and new messages stay with the broker (back-pressure).

While the database is unavailable a lane retries with backoff and does not give up: nothing is
acknowledged, nothing is lost. A batch the database rejects for a non-transient reason is
retried item by item; an item that still fails becomes a dead letter with reason
``storage_rejected`` so the rest of the batch is kept. An unexpected error in the background
thread is raised in the worker at its next ``write_batch`` (the flow stops; what was not
committed is redelivered).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flows import metrics
from flows.acks import commit
from flows.commands import CommandPublisher
from flows.envelope import Envelope
from operators.decode import dead_letter
from operators.records import DeadLetter, DerivedAlerts, Stored, changes_alerts
from storage.errors import DatabaseUnavailable, StorageError
from storage.writer import BatchWriter, WriteResult

log = logging.getLogger(__name__)


def split_lanes(items: list[Envelope]) -> tuple[list[Envelope], list[Envelope]]:
    """``(urgent, bulk)``, each in the order given: urgent are the items that change alerts or
    command a device (:func:`~operators.records.changes_alerts`). Items stored elsewhere (by
    the priority lane) are in neither."""
    urgent: list[Envelope] = []
    bulk: list[Envelope] = []
    for e in items:
        if not e.elsewhere:
            (urgent if changes_alerts(e.stored_item) else bulk).append(e)
    return urgent, bulk


class StorageSink(DynamicSink[Envelope]):
    """Per worker: an urgent lane in the worker thread and a bulk lane in a thread of its own."""

    def __init__(
        self,
        database_url: str,
        commands: Callable[[], CommandPublisher] | None = None,
        max_backoff_s: float = 5.0,
        bulk_max_rows: int = 5000,
        name: str = "noc-ingest",
    ) -> None:
        self._url = database_url
        self._commands = commands
        self._max_backoff_s = max_backoff_s
        self._bulk_max_rows = bulk_max_rows
        self._name = name

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StoragePartition:
        del step_id, worker_count
        publisher = self._commands() if self._commands else None
        name = f"{self._name}-{worker_index}"
        backoff = self._max_backoff_s
        urgent = _Lane("urgent", BatchWriter(self._url, f"{name}-urgent"), publisher, backoff)
        bulk = _Lane("bulk", BatchWriter(self._url, name), publisher, backoff)
        return _StoragePartition(urgent, _BackgroundLane(bulk, self._bulk_max_rows), publisher)


class _Lane:
    """Stores batches through one writer: retries, item-by-item fallback, metrics, acks."""

    def __init__(
        self,
        name: str,
        writer: BatchWriter,
        publisher: CommandPublisher | None,
        max_backoff_s: float,
    ) -> None:
        self.name = name
        self._writer = writer
        self._publisher = publisher
        self._max_backoff_s = max_backoff_s
        self._seconds = metrics.BATCH_SECONDS.labels(name)
        self._size = metrics.BATCH_SIZE.labels(name)

    def store(self, items: list[Envelope]) -> None:
        """Commit the items (retrying until the database takes them), then report their tokens
        as committed and publish the device commands they caused. Blocks while it retries."""
        stored = [e.stored_item for e in items]
        started = time.perf_counter()
        result = self._write(stored, items)
        self._seconds.observe(time.perf_counter() - started)
        self._size.observe(len(items))
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
                log.warning(
                    "%s lane: database unavailable, retrying in %.1fs: %s", self.name, backoff, exc
                )
            except StorageError as exc:
                metrics.WRITE_RETRIES.labels("rejected").inc()
                log.error("%s lane: batch rejected (%s); storing item by item", self.name, exc)
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


class _BackgroundLane:
    """A lane run by its own thread over a bounded queue of batches.

    ``put`` never waits unless ``max_rows`` items are already queued; the thread takes
    everything queued (up to ``max_rows``) into one transaction.
    """

    def __init__(self, lane: _Lane, max_rows: int) -> None:
        self.lane = lane
        self._max_rows = max_rows
        self._batches: deque[list[Envelope]] = deque()
        self._queued = 0
        self._busy = False
        self._closing = False
        self._failure: BaseException | None = None
        self._cond = threading.Condition()
        self._depth = metrics.STORE_QUEUED.labels(lane.name)
        self._thread = threading.Thread(
            target=self._run, name=f"noc-{lane.name}-writer", daemon=True
        )
        self._thread.start()

    def put(self, items: list[Envelope]) -> None:
        """Queue a batch; blocks while the queue is full. Raises the thread's failure."""
        with self._cond:
            while self._queued >= self._max_rows and self._failure is None:
                self._cond.wait()
            self._raise_failure()
            self._batches.append(items)
            self._queued += len(items)
            self._depth.set(self._queued)
            self._cond.notify_all()

    def check(self) -> None:
        """Raise the thread's failure, if it had one."""
        with self._cond:
            self._raise_failure()

    def drain(self) -> None:
        """Wait until everything queued has been committed."""
        with self._cond:
            while (self._batches or self._busy) and self._failure is None:
                self._cond.wait()
            self._raise_failure()

    def close(self) -> None:
        """Store what is queued, stop the thread, close the connection."""
        try:
            self.drain()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join()
            self.lane.close()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"{self.lane.name} storage lane failed") from self._failure

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._batches and not self._closing:
                    self._cond.wait()
                if not self._batches:
                    return
                items: list[Envelope] = []
                while self._batches and (
                    not items or len(items) + len(self._batches[0]) <= self._max_rows
                ):
                    items.extend(self._batches.popleft())
                self._busy = True
            try:
                self.lane.store(items)
            except BaseException as exc:  # surfaced in the worker thread
                log.exception("%s lane failed", self.lane.name)
                with self._cond:
                    self._failure = exc
                    self._busy = False
                    self._cond.notify_all()
                return
            with self._cond:
                self._busy = False
                self._queued -= len(items)
                self._depth.set(self._queued)
                self._cond.notify_all()


class _StoragePartition(StatelessSinkPartition[Envelope]):
    def __init__(
        self,
        urgent: _Lane,
        bulk: _BackgroundLane,
        publisher: CommandPublisher | None,
    ) -> None:
        self._urgent = urgent
        self._bulk = bulk
        self._publisher = publisher

    def write_batch(self, items: list[Envelope]) -> None:
        """Store the urgent items now, queue the rest. Blocks only for the urgent commit or
        while the bulk queue is full."""
        self._bulk.check()
        urgent, bulk = split_lanes(items)
        if urgent:
            self._urgent.store(urgent)
        if bulk:
            self._bulk.put(bulk)

    def close(self) -> None:
        try:
            self._bulk.close()
        finally:
            self._urgent.close()
            if self._publisher is not None:
                self._publisher.close()
