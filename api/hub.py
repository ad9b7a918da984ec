"""In-process fan-out of committed events to WebSocket subscribers.

One :class:`EventHub` per API process holds one ``LISTEN noc_ws_events`` connection and one
connection that reads the events table. A notification only wakes the reader: it pages
through ``event_id > cursor`` (see :mod:`storage.events` for why that has no gaps), then hands
each event to the subscribers of the event's tenant. Handing over never waits: each subscriber
has a bounded queue, and a subscriber whose queue is full is marked overflowed and dropped
from the hub (its socket is then closed by its own task), so a slow client never slows the
others. If the database connection is lost the hub reconnects and continues from its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import psycopg
from psycopg import sql

from api import metrics
from storage import events

log = logging.getLogger(__name__)

FETCH_LIMIT = 1000
"""Most events read per query (also at most half a subscriber's queue limit: between pages
the hub yields, so subscribers that keep up drain their queue before the next page)."""


class Overflow(Exception):
    """The subscriber fell more than its queue limit behind."""


class Subscriber:
    """One client's bounded queue of ``(event_id, message)``. Used from the event loop only."""

    def __init__(self, tenant_id: int, limit: int) -> None:
        self.tenant_id = tenant_id
        self.limit = limit
        self.overflowed = False
        self._items: deque[tuple[int, str]] = deque()
        self._ready = asyncio.Event()

    def offer(self, event_id: int, message: str) -> bool:
        """Queue an event without waiting; False (and overflowed) if the queue is full."""
        if self.overflowed:
            return False
        if len(self._items) >= self.limit:
            self.overflowed = True
            self._items.clear()
            self._ready.set()
            return False
        self._items.append((event_id, message))
        self._ready.set()
        return True

    async def take(self) -> list[tuple[int, str]]:
        """Wait for queued events and return all of them, oldest first; raise Overflow."""
        while not self._items and not self.overflowed:
            self._ready.clear()
            await self._ready.wait()
        if self.overflowed:
            raise Overflow
        items = list(self._items)
        self._items.clear()
        return items


class EventHub:
    """The LISTEN connection, the reader and the subscribers of one API process."""

    def __init__(self, database_url: str, queue_limit: int, retry_s: float = 1.0) -> None:
        self._url = database_url
        self._queue_limit = queue_limit
        self._retry_s = retry_s
        self._page = max(1, min(FETCH_LIMIT, queue_limit // 2))
        self._subscribers: dict[int, set[Subscriber]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._positioned = False
        self.cursor = 0
        """Highest event id handed to subscribers (every event <= it has been dispatched)."""

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up."""
        return self._ready.is_set()

    async def start(self, timeout: float = 10.0) -> None:
        """Connect and start listening; returns once LISTEN is active (or raises)."""
        self._task = asyncio.create_task(self._run(), name="noc-event-hub")
        waiter = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait(
            {waiter, self._task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            await self.stop()
            raise ConnectionError("event listener did not start")

    async def stop(self) -> None:
        """Stop listening; subscribers get nothing more."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._ready.clear()

    def subscribe(self, tenant_id: int) -> Subscriber:
        """A new subscriber receiving every event of ``tenant_id`` dispatched from now on."""
        sub = Subscriber(tenant_id, self._queue_limit)
        self._subscribers.setdefault(tenant_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a subscriber (idempotent)."""
        subs = self._subscribers.get(sub.tenant_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.tenant_id]

    def dispatch(self, batch: list[events.StoredEvent]) -> None:
        """Hand events (in id order) to their tenant's subscribers. Never waits."""
        for event in batch:
            subs = self._subscribers.get(event.tenant_id)
            if subs:
                for sub in list(subs):
                    if not sub.offer(event.event_id, event.message):
                        metrics.WS_OVERFLOWS.inc()
                        self.unsubscribe(sub)
            self.cursor = event.event_id

    async def _run(self) -> None:
        while True:
            try:
                await self._serve()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("event listener lost its database connection: %s", exc)
            self._ready.clear()
            metrics.LISTENER_UP.set(0)
            await asyncio.sleep(self._retry_s)

    async def _serve(self) -> None:
        async with (
            await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, application_name="noc-api-listen"
            ) as listen,
            await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, application_name="noc-api-fanout"
            ) as reader,
        ):
            await listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(events.CHANNEL)))
            if not self._positioned:
                self.cursor = await events.global_head(reader)
                self._positioned = True
            self._wake.set()  # catch up on whatever committed while we were away
            self._ready.set()
            metrics.LISTENER_UP.set(1)
            log.info("listening for events after id %d", self.cursor)
            notified = asyncio.create_task(self._notified(listen))
            try:
                while True:
                    await self._wait_for_wake(notified)
                    await self._drain(reader)
            finally:
                notified.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await notified

    async def _notified(self, listen: psycopg.AsyncConnection[Any]) -> None:
        async for _ in listen.notifies():
            self._wake.set()

    async def _wait_for_wake(self, notified: asyncio.Task[None]) -> None:
        waiter = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait({waiter, notified}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if notified.done():
            notified.result()  # re-raise the listener's error
            raise psycopg.OperationalError("LISTEN connection ended")
        self._wake.clear()

    async def _drain(self, reader: psycopg.AsyncConnection[Any]) -> None:
        while True:
            with metrics.FETCH_SECONDS.time():
                batch = await events.fetch_after(reader, self.cursor, self._page)
            self.dispatch(batch)
            if len(batch) < self._page:
                return
            await asyncio.sleep(0)  # let the subscribers' senders run
