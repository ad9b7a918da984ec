"""Acknowledge MQTT messages only after the transaction holding them has committed.

Bytewax has no "ack after output" (bytewax#229), so the source and the sink share this small
in-process registry: the MQTT source registers each QoS>0 message it reads and gets an
:class:`AckToken`; the storage sink reports tokens once their batch has committed; the source
then sends PUBACKs for the longest committed prefix, in arrival order per connection.

Tokens of an earlier connection (``generation``) are never acknowledged: after a reconnect
the broker redelivers those messages and storage skips them as duplicates.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple


class AckToken(NamedTuple):
    """Identifies one received message: partition, connection generation, arrival number.
    (A named tuple: one is made per message, on the MQTT reader's thread.)"""

    partition: str
    generation: int
    seq: int


class AckLedger:
    """In-flight messages of one MQTT partition. Thread-safe (paho thread + worker thread)."""

    def __init__(self, partition: str) -> None:
        self.partition = partition
        self._lock = threading.Lock()
        self._generation = 0
        self._next_seq = 0
        self._pending: deque[tuple[int, int]] = deque()  # (seq, mid) in arrival order
        self._committed: set[int] = set()

    def new_connection(self) -> None:
        """Forget everything in flight: the broker will redeliver it on the new connection."""
        with self._lock:
            self._generation += 1
            self._pending.clear()
            self._committed.clear()

    def received(self, mid: int) -> AckToken:
        """Register a message that needs a PUBACK once committed."""
        return self.received_many([mid])[0]

    def received_many(self, mids: list[int]) -> list[AckToken]:
        """Register messages in arrival order (one lock for all of them)."""
        with self._lock:
            seq = self._next_seq
            self._next_seq += len(mids)
            gen = self._generation
            self._pending.extend(zip(range(seq, seq + len(mids)), mids, strict=True))
            return [AckToken(self.partition, gen, s) for s in range(seq, seq + len(mids))]

    def committed(self, tokens: Iterable[AckToken]) -> None:
        """Mark tokens as durably stored; tokens of older connections are ignored."""
        with self._lock:
            for token in tokens:
                if token.generation == self._generation:
                    self._committed.add(token.seq)

    def take_ackable(self) -> tuple[int, list[int]]:
        """``(generation, packet ids)`` that may be acknowledged now: the committed prefix of
        the current connection, in arrival order. Send them only while ``generation`` is
        still current (:attr:`generation`)."""
        mids: list[int] = []
        with self._lock:
            while self._pending and self._pending[0][0] in self._committed:
                seq, mid = self._pending.popleft()
                self._committed.discard(seq)
                mids.append(mid)
            return self._generation, mids

    @property
    def generation(self) -> int:
        """Counts connections (and disconnections): tokens of an older one are void."""
        with self._lock:
            return self._generation

    @property
    def in_flight(self) -> int:
        """Messages received on this connection and not yet acknowledged."""
        with self._lock:
            return len(self._pending)


_LEDGERS: dict[str, AckLedger] = {}
_LEDGERS_LOCK = threading.Lock()


def ledger_for(partition: str) -> AckLedger:
    """The process-wide ledger of a partition (created on first use)."""
    with _LEDGERS_LOCK:
        ledger = _LEDGERS.get(partition)
        if ledger is None:
            ledger = _LEDGERS[partition] = AckLedger(partition)
        return ledger


def commit(tokens: Iterable[AckToken | None]) -> None:
    """Report committed tokens to their partitions' ledgers (None = nothing to acknowledge)."""
    by_partition: dict[str, list[AckToken]] = {}
    for token in tokens:
        if token is not None:
            by_partition.setdefault(token.partition, []).append(token)
    for partition, group in by_partition.items():
        ledger_for(partition).committed(group)
