"""Acknowledging MQTT messages only after their commit, in arrival order (``flows.acks``).

``ledger_for`` keeps process-wide ledgers, so every test here uses its own partition names.
"""

from __future__ import annotations

import threading
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from flows.acks import AckLedger, AckToken, commit, ledger_for


def partition_name(label: str) -> str:
    return f"test-acks-{label}-{uuid.uuid4().hex}"


def test_received_many_assigns_consecutive_seqs_in_order() -> None:
    ledger = AckLedger("p")
    assert ledger.received(7) == AckToken("p", 0, 0)
    assert ledger.received_many([10, 11, 12]) == [
        AckToken("p", 0, 1),
        AckToken("p", 0, 2),
        AckToken("p", 0, 3),
    ]
    assert ledger.received_many([]) == []
    assert ledger.received(13) == AckToken("p", 0, 4)
    assert ledger.in_flight == 5


def test_only_the_committed_prefix_is_ackable() -> None:
    ledger = AckLedger("p")
    t = ledger.received_many([101, 102, 103, 104])
    assert ledger.take_ackable() == (0, [])
    ledger.committed([t[1], t[3]])  # out of order: the first is not committed yet
    assert ledger.take_ackable() == (0, [])
    assert ledger.in_flight == 4
    ledger.committed([t[0]])
    assert ledger.take_ackable() == (0, [101, 102])
    assert ledger.take_ackable() == (0, [])  # taken once only
    assert ledger.in_flight == 2
    ledger.committed([t[2]])
    assert ledger.take_ackable() == (0, [103, 104])
    assert ledger.in_flight == 0


def test_ackable_mids_come_in_arrival_order_even_when_ids_repeat() -> None:
    # Packet ids are reused by the broker: order is by arrival, not by id.
    ledger = AckLedger("p")
    tokens = ledger.received_many([9, 3, 9, 1])
    ledger.committed(reversed(tokens))
    assert ledger.take_ackable() == (0, [9, 3, 9, 1])


def test_new_connection_voids_older_tokens() -> None:
    ledger = AckLedger("p")
    old = ledger.received_many([1, 2])
    ledger.new_connection()
    assert ledger.generation == 1
    assert ledger.in_flight == 0
    new = ledger.received_many([1, 2])
    # Sequence numbers keep counting; only the generation tells the connections apart.
    assert new == [AckToken("p", 1, 2), AckToken("p", 1, 3)]
    ledger.committed(old)
    assert ledger.take_ackable() == (1, [])
    ledger.committed(new)
    assert ledger.take_ackable() == (1, [1, 2])


def test_a_token_is_matched_by_generation_as_well_as_seq() -> None:
    ledger = AckLedger("p")
    ledger.received(1)
    ledger.new_connection()
    (token,) = ledger.received_many([2])
    # Same partition and seq as the pending message, but an older generation: void.
    ledger.committed([AckToken("p", token.generation - 1, token.seq)])
    assert ledger.take_ackable() == (1, [])
    ledger.committed([token])
    assert ledger.take_ackable() == (1, [2])


def test_commits_before_a_reconnect_are_forgotten() -> None:
    ledger = AckLedger("p")
    ledger.received_many([1, 2])
    ledger.committed([AckToken("p", 0, 1)])  # committed but behind an uncommitted one
    ledger.new_connection()
    ledger.new_connection()
    assert ledger.generation == 2
    assert ledger.take_ackable() == (2, [])
    tokens = ledger.received_many([5])
    ledger.committed(tokens)
    assert ledger.take_ackable() == (2, [5])


def test_commit_routes_tokens_to_their_partitions() -> None:
    a, b = partition_name("a"), partition_name("b")
    ledger_a, ledger_b = ledger_for(a), ledger_for(b)
    assert ledger_for(a) is ledger_a
    assert ledger_a is not ledger_b
    ta = ledger_a.received_many([1, 2])
    tb = ledger_b.received_many([3, 4])
    commit([tb[1], None, ta[0], None, tb[0]])
    assert ledger_a.take_ackable() == (0, [1])
    assert ledger_b.take_ackable() == (0, [3, 4])
    commit([])
    commit([None])
    assert ledger_a.take_ackable() == (0, [])
    commit([ta[1]])
    assert ledger_a.take_ackable() == (0, [2])


def test_concurrent_receive_and_commit_lose_nothing() -> None:
    partition = partition_name("threads")
    ledger = ledger_for(partition)
    n = 5000
    tokens: list[AckToken] = []
    tokens_lock = threading.Lock()
    done = threading.Event()
    acked: list[int] = []

    def receive() -> None:
        for i in range(0, n, 10):
            batch = ledger.received_many(list(range(i, i + 10)))
            with tokens_lock:
                tokens.extend(batch)
        done.set()

    def commit_and_ack() -> None:
        while True:
            finished = done.is_set()
            with tokens_lock:
                batch = tokens[:]
                tokens.clear()
            commit(batch)
            acked.extend(ledger.take_ackable()[1])
            if finished and not batch:
                return

    threads = [threading.Thread(target=receive), threading.Thread(target=commit_and_ack)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert acked == list(range(n))
    assert ledger.in_flight == 0


@settings(max_examples=200, deadline=None)
@given(data=st.data(), mids=st.lists(st.integers(1, 65535), max_size=30))
def test_any_commit_order_acks_every_mid_once_in_arrival_order(
    data: st.DataObject, mids: list[int]
) -> None:
    ledger = AckLedger("p")
    tokens = ledger.received_many(mids)
    order = data.draw(st.permutations(tokens))
    taken: list[int] = []
    for token in order:
        ledger.committed([token])
        generation, ackable = ledger.take_ackable()
        assert generation == 0
        taken += ackable
        # Never ahead of the commits: everything taken so far was committed.
        committed = {t.seq for t in order[: order.index(token) + 1]}
        assert all(t.seq in committed for t in tokens[: len(taken)])
    assert taken == mids
    assert ledger.in_flight == 0
