"""Priority topics reach the flow twice: through the priority lane and through the bulk one.

The priority lane (:mod:`flows.priority_lane`, a process of its own) subscribes only to the
priority topics, with its own client id and in-flight window, so a panic is neither held by
the broker behind unacknowledged telemetry nor by the bulk worker behind a batch of it. The
bulk partition subscribes to everything (so topics outside the contract are still
dead-lettered) and therefore receives a second copy of each priority message. This registry,
in the bulk flow's process, pairs the copies so the message is stored once:

- the bulk copy of a message the priority lane already received is acknowledged at once and
  travels on *stored elsewhere*: the windows still hear the device, storage skips it;
- a bulk copy that arrives first is held until the priority copy arrives (then it travels on
  the same way, :meth:`Handoff.take_paired`) or until ``hold_s`` passes (then the bulk
  partition stores it: the priority session may not have existed when the message was
  queued, e.g. right after an upgrade). While the priority lane is disconnected, bulk copies
  are stored as usual.

The priority copy is acknowledged after its own commit, so a crash in between redelivers that
one: acknowledging the bulk copy early never loses a message. Identical topic and payload mean
the same message to storage too (its identity is the device, the event time and a digest of the
payload), so pairing on them never drops a message that storage would have kept.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

from flows.envelope import Inbound

T = TypeVar("T")


def message_key(topic: str, payload: bytes) -> bytes:
    """A collision-resistant digest of a message's topic and payload."""
    h = hashlib.blake2b(topic.encode(), digest_size=16)
    h.update(b"\0")
    h.update(payload)
    return h.digest()


class Handoff(Generic[T]):
    """Pairs the priority and bulk copies of messages. Thread-safe.

    ``T`` is what the bulk partition holds for a copy (its message and acknowledgement
    token). At most ``capacity`` unpaired priority copies are remembered, oldest forgotten
    first (a forgotten one only means its bulk copy is held, then processed: storage skips a
    duplicate data row).
    """

    def __init__(
        self,
        hold_s: float = 5.0,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hold_s = hold_s
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._held: dict[bytes, deque[tuple[float, T]]] = {}
        self._held_order: deque[tuple[float, bytes]] = deque()
        self._paired: deque[T] = deque()
        self.priority_connected = False
        """Set from the priority lane's reports; while False, bulk copies are not held."""

    def priority_copy(self, key: bytes) -> T | None:
        """The priority lane received the message with :func:`message_key` ``key``. Returns
        the held bulk copy it pairs with (now done: acknowledge it), if any."""
        with self._lock:
            held = self._held.get(key)
            if held:
                _at, item = held.popleft()
                if not held:
                    del self._held[key]
                return item
            self._seen[key] = self._seen.get(key, 0) + 1
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return None

    def priority_copies(self, keys: list[bytes]) -> int:
        """:meth:`priority_copy` for each key; held bulk copies that pair are kept for
        :meth:`take_paired`. Returns how many paired."""
        paired = [item for item in map(self.priority_copy, keys) if item is not None]
        if paired:
            with self._lock:
                self._paired.extend(paired)
        return len(paired)

    def take_paired(self) -> list[T]:
        """Held bulk copies whose priority copy has arrived since the last call."""
        with self._lock:
            out = list(self._paired)
            self._paired.clear()
            return out

    def bulk_copy(self, topic: str, payload: bytes, item: T) -> str:
        """The bulk partition received a priority-topic message: ``"paired"`` (the priority
        copy came first: acknowledge this one), ``"held"`` (wait for it) or ``"process"``
        (store it: the priority lane is not connected)."""
        key = message_key(topic, payload)
        with self._lock:
            count = self._seen.get(key, 0)
            if count:
                if count == 1:
                    del self._seen[key]
                else:
                    self._seen[key] = count - 1
                return "paired"
            if not self.priority_connected:
                return "process"
            now = self._clock()
            self._held.setdefault(key, deque()).append((now, item))
            self._held_order.append((now, key))
            return "held"

    def expired(self) -> list[T]:
        """Held bulk copies whose priority copy did not come in time (all of them while the
        priority partition is disconnected): the bulk partition processes these."""
        out: list[T] = []
        with self._lock:
            limit = self._clock() - self._hold_s
            order = self._held_order
            while order and (order[0][0] <= limit or not self.priority_connected):
                at, key = order.popleft()
                held = self._held.get(key)
                if held and held[0][0] == at:
                    out.append(held.popleft()[1])
                    if not held:
                        del self._held[key]
        return out

    @property
    def held(self) -> int:
        """Bulk copies waiting for their priority copy."""
        with self._lock:
            return sum(len(h) for h in self._held.values())


_HANDOFFS: dict[str, Handoff[Inbound]] = {}
_HANDOFFS_LOCK = threading.Lock()


def handoff_for(client_id_prefix: str) -> Handoff[Inbound]:
    """The process-wide handoff between one flow's partitions (created on first use)."""
    with _HANDOFFS_LOCK:
        handoff = _HANDOFFS.get(client_id_prefix)
        if handoff is None:
            handoff = _HANDOFFS[client_id_prefix] = Handoff[Inbound]()
        return handoff
