"""Pairing the priority-partition and bulk-partition copies of a message (``flows.handoff``).

The clock is a fake one the tests advance by hand, so holding and expiry are exact.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.handoff import Handoff, message_key


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def connected(
    hold_s: float = 5.0, capacity: int = 100, clock: FakeClock | None = None
) -> Handoff[str]:
    handoff = Handoff[str](hold_s=hold_s, capacity=capacity, clock=clock or FakeClock())
    handoff.priority_connected = True
    return handoff


def test_message_key_depends_on_topic_and_payload() -> None:
    key = message_key("alert/panic/d-1", b"{}")
    assert key == message_key("alert/panic/d-1", b"{}")
    assert len(key) == 16
    assert key != message_key("alert/panic/d-2", b"{}")
    assert key != message_key("alert/panic/d-1", b"{ }")
    # The separator keeps topic and payload apart: "ab" + "c" is not "a" + "bc".
    assert message_key("ab", b"c") != message_key("a", b"bc")


def test_priority_copy_first_then_bulk_copy_is_paired() -> None:
    handoff = connected()
    assert handoff.priority_copy(message_key("alert/panic/d-1", b"p")) is None
    assert handoff.bulk_copy("alert/panic/d-1", b"p", "bulk-1") == "paired"
    assert handoff.held == 0
    # The pairing was used up: a second bulk copy has nothing to pair with.
    assert handoff.bulk_copy("alert/panic/d-1", b"p", "bulk-2") == "held"


def test_bulk_copy_first_is_held_until_the_priority_copy() -> None:
    handoff = connected()
    assert handoff.bulk_copy("alert/panic/d-1", b"p", "bulk-1") == "held"
    assert handoff.held == 1
    assert handoff.priority_copy(message_key("alert/panic/d-1", b"p")) == "bulk-1"
    assert handoff.held == 0
    # The priority copy was consumed by the pairing, not remembered for a later bulk copy.
    assert handoff.bulk_copy("alert/panic/d-1", b"p", "bulk-2") == "held"
    assert handoff.expired() == []


def test_paired_held_copy_is_not_expired_later() -> None:
    clock = FakeClock()
    handoff = connected(clock=clock)
    handoff.bulk_copy("t", b"p", "bulk-1")
    assert handoff.priority_copy(message_key("t", b"p")) == "bulk-1"
    clock.now += 60
    assert handoff.expired() == []


@pytest.mark.parametrize("priority_seen", [False, True])
def test_bulk_copy_while_priority_disconnected(priority_seen: bool) -> None:
    handoff = Handoff[str](clock=FakeClock())
    assert handoff.priority_connected is False
    if priority_seen:
        # A priority copy received before the disconnect still pairs its bulk copy.
        handoff.priority_copy(message_key("t", b"p"))
        assert handoff.bulk_copy("t", b"p", "bulk-1") == "paired"
    else:
        assert handoff.bulk_copy("t", b"p", "bulk-1") == "process"
    assert handoff.held == 0


def test_held_copies_expire_after_hold_s_in_arrival_order() -> None:
    clock = FakeClock(1000.0)
    handoff = connected(hold_s=5.0, clock=clock)
    handoff.bulk_copy("t", b"1", "first")
    clock.now = 1002.0
    handoff.bulk_copy("t", b"2", "second")
    clock.now = 1004.999
    assert handoff.expired() == []
    clock.now = 1005.0
    assert handoff.expired() == ["first"]
    assert handoff.held == 1
    clock.now = 1006.999
    assert handoff.expired() == []
    clock.now = 1007.0
    assert handoff.expired() == ["second"]
    assert handoff.held == 0
    assert handoff.expired() == []
    # An expired copy is gone: its late priority copy is remembered for a next bulk copy.
    assert handoff.priority_copy(message_key("t", b"1")) is None


def test_all_held_copies_expire_at_once_when_priority_disconnects() -> None:
    clock = FakeClock()
    handoff = connected(hold_s=5.0, clock=clock)
    for i in range(3):
        handoff.bulk_copy("t", str(i).encode(), f"bulk-{i}")
    handoff.bulk_copy("t", b"0", "bulk-0-again")
    clock.now += 1
    assert handoff.expired() == []
    handoff.priority_connected = False
    assert sorted(handoff.expired()) == ["bulk-0", "bulk-0-again", "bulk-1", "bulk-2"]
    assert handoff.held == 0
    assert handoff.expired() == []


def test_duplicates_pair_one_to_one() -> None:
    clock = FakeClock()
    handoff = connected(clock=clock)
    # Two priority copies of the same topic and payload pair two bulk copies, not three.
    assert handoff.priority_copy(message_key("t", b"p")) is None
    assert handoff.priority_copy(message_key("t", b"p")) is None
    assert handoff.bulk_copy("t", b"p", "a") == "paired"
    assert handoff.bulk_copy("t", b"p", "b") == "paired"
    assert handoff.bulk_copy("t", b"p", "c") == "held"
    # Two held bulk copies are released one per priority copy, oldest first.
    assert handoff.bulk_copy("t", b"p", "d") == "held"
    assert handoff.held == 2
    assert handoff.priority_copy(message_key("t", b"p")) == "c"
    assert handoff.priority_copy(message_key("t", b"p")) == "d"
    assert handoff.priority_copy(message_key("t", b"p")) is None
    assert handoff.held == 0
    clock.now += 60
    assert handoff.expired() == []


def test_duplicate_held_at_the_same_instant_expires_once_each() -> None:
    clock = FakeClock()
    handoff = connected(hold_s=5.0, clock=clock)
    handoff.bulk_copy("t", b"p", "a")
    handoff.bulk_copy("t", b"p", "b")
    assert handoff.priority_copy(message_key("t", b"p")) == "a"
    clock.now += 5
    assert handoff.expired() == ["b"]
    assert handoff.expired() == []


def test_held_again_after_pairing_expires_on_its_own_time() -> None:
    clock = FakeClock(1000.0)
    handoff = connected(hold_s=5.0, clock=clock)
    handoff.bulk_copy("t", b"p", "a")
    assert handoff.priority_copy(message_key("t", b"p")) == "a"
    clock.now = 1003.0
    handoff.bulk_copy("t", b"p", "b")
    clock.now = 1005.0  # the first (paired) copy's time is up, not the second's
    assert handoff.expired() == []
    assert handoff.held == 1
    clock.now = 1008.0
    assert handoff.expired() == ["b"]


@pytest.mark.parametrize(
    ("priority", "bulk"),
    [
        (("t", b"p"), ("t", b"q")),
        (("t", b"p"), ("u", b"p")),
        (("t", b"p"), ("t", b"p ")),
        (("t", b"p"), ("t", b"")),
        (("ab", b"c"), ("a", b"bc")),
    ],
)  # fmt: skip
def test_different_messages_never_pair(
    priority: tuple[str, bytes], bulk: tuple[str, bytes]
) -> None:
    handoff = connected()
    assert handoff.priority_copy(message_key(*priority)) is None
    assert handoff.bulk_copy(*bulk, "bulk") == "held"
    assert handoff.priority_copy(message_key(*priority)) is None
    assert handoff.held == 1


def test_capacity_forgets_the_oldest_unpaired_priority_copy() -> None:
    handoff = connected(capacity=2)
    for topic in ("a", "b", "c"):
        assert handoff.priority_copy(message_key(topic, b"p")) is None
    assert handoff.bulk_copy("a", b"p", "bulk-a") == "held"  # forgotten
    assert handoff.bulk_copy("b", b"p", "bulk-b") == "paired"
    assert handoff.bulk_copy("c", b"p", "bulk-c") == "paired"


def test_capacity_counts_messages_not_duplicates() -> None:
    handoff = connected(capacity=2)
    handoff.priority_copy(message_key("a", b"p"))
    handoff.priority_copy(message_key("a", b"p"))
    handoff.priority_copy(message_key("b", b"p"))
    assert handoff.bulk_copy("a", b"p", "1") == "paired"
    assert handoff.bulk_copy("a", b"p", "2") == "paired"
    assert handoff.bulk_copy("b", b"p", "3") == "paired"


# Each message (index) has a priority copy and a bulk copy; some share topic and payload.
@st.composite
def interleavings(draw: st.DrawFn) -> tuple[list[tuple[str, bytes]], list[tuple[str, int]]]:
    messages = draw(
        st.lists(
            st.tuples(st.sampled_from(["a", "b", "é"]), st.binary(max_size=2)),
            min_size=1,
            max_size=12,
        )
    )
    events = [("priority", i) for i in range(len(messages))] + [
        ("bulk", i) for i in range(len(messages))
    ]
    return messages, draw(st.permutations(events))


@settings(max_examples=200, deadline=None)
@given(case=interleavings())
def test_every_bulk_copy_is_paired_or_returned_exactly_once(
    case: tuple[list[tuple[str, bytes]], list[tuple[str, int]]],
) -> None:
    messages, events = case
    handoff = connected(capacity=1000)
    paired: list[int] = []
    held: list[int] = []
    returned: list[int] = []
    for side, i in events:
        topic, payload = messages[i]
        if side == "priority":
            item = handoff.priority_copy(message_key(topic, payload))
            if item is not None:
                # Only a bulk copy of the same message (topic and payload) is handed back.
                assert messages[int(item)] == messages[i]
                returned.append(int(item))
        else:
            outcome = handoff.bulk_copy(topic, payload, str(i))
            assert outcome in ("paired", "held")
            (paired if outcome == "paired" else held).append(i)
    assert sorted(paired + held) == list(range(len(messages)))
    assert Counter(returned) == Counter(held)
    assert handoff.held == 0
    assert handoff.expired() == []
    handoff.priority_connected = False
    assert handoff.expired() == []


def test_copies_paired_through_the_lane_are_taken_once_in_order() -> None:
    handoff = connected()
    for i in range(3):
        assert handoff.bulk_copy("alert/panic/d-1", str(i).encode(), f"bulk-{i}") == "held"
    keys = [message_key("alert/panic/d-1", b"2"), message_key("alert/panic/d-1", b"0")]
    assert handoff.priority_copies([*keys, message_key("alert/other", b"x")]) == 2
    assert handoff.take_paired() == ["bulk-2", "bulk-0"]
    assert handoff.take_paired() == []
    assert handoff.held == 1
    # The unpaired priority copy is remembered for its bulk copy.
    assert handoff.bulk_copy("alert/other", b"x", "bulk-x") == "paired"
