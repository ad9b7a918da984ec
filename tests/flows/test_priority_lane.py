"""The priority lane's report pipe and its supervisor (``flows.priority_lane``).

Frames are tested as bytes; the supervisor against real child processes (small Python
programs standing in for the lane), so start, restart, reports and exit-with-parent are the
operating system's, not a fake's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.handoff import Handoff, message_key
from flows.priority_lane import (
    CONNECTED,
    COPY,
    DISCONNECTED,
    FRAME_SIZE,
    PipeReporter,
    PriorityLane,
    apply_frames,
    encode_frames,
)


def wait_for(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_frames_have_a_fixed_size() -> None:
    key = message_key("alert/panic/pb-1", b"{}")
    assert encode_frames(CONNECTED) == CONNECTED + bytes(16)
    assert encode_frames(DISCONNECTED) == DISCONNECTED + bytes(16)
    assert encode_frames(COPY, [key, key]) == (COPY + key) * 2
    assert all(len(encode_frames(k)) == FRAME_SIZE for k in (CONNECTED, DISCONNECTED))


@pytest.mark.parametrize(
    ("kind", "keys", "message"),
    [
        (COPY, [b"short"], "16 bytes"),
        (CONNECTED, [bytes(16)], "not a connection frame"),
        (b"X", [], "not a connection frame"),
    ],
)
def test_bad_frames_are_refused(kind: bytes, keys: list[bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_frames(kind, keys)


def test_an_unknown_frame_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown priority lane frame"):
        apply_frames(Handoff[str](), b"X" + bytes(16))


def test_frames_drive_the_handoff_in_order() -> None:
    handoff = Handoff[str]()
    assert handoff.bulk_copy("alert/panic/pb-1", b"p", "bulk") == "process"  # lane not up
    key = message_key("alert/panic/pb-1", b"p")
    data = encode_frames(CONNECTED) + encode_frames(COPY, [key]) + encode_frames(DISCONNECTED)
    assert apply_frames(handoff, data) == len(data)
    assert handoff.priority_connected is False
    # The copy arrived while connected, so the next bulk copy pairs with it.
    assert handoff.bulk_copy("alert/panic/pb-1", b"p", "bulk") == "paired"


# Any stream of frames, cut into any chunks, leaves the handoff as the whole stream does.
frames = st.lists(
    st.one_of(
        st.just(encode_frames(CONNECTED)),
        st.just(encode_frames(DISCONNECTED)),
        st.binary(min_size=1, max_size=3).map(
            lambda p: encode_frames(COPY, [message_key("alert/x", p)])
        ),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(stream=frames, cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=8))
def test_chunking_does_not_change_the_outcome(stream: list[bytes], cuts: list[int]) -> None:
    data = b"".join(stream)
    whole: Handoff[str] = Handoff()
    apply_frames(whole, data)
    chunked: Handoff[str] = Handoff()
    buffer = b""
    at = 0
    for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
        buffer += data[at:cut]
        at = max(at, cut)
        buffer = buffer[apply_frames(chunked, buffer) :]
    assert buffer == b""
    assert chunked.priority_connected == whole.priority_connected
    for p in range(256):  # every single-byte payload: the remembered copies agree
        key_topic = ("alert/x", bytes([p]))
        assert chunked.bulk_copy(*key_topic, "c") == whole.bulk_copy(*key_topic, "w")


def test_pipe_reporter_writes_frames_a_reader_applies() -> None:
    read_fd, write_fd = os.pipe()
    reporter = PipeReporter(write_fd)
    keys = [message_key("alert/panic/pb-1", str(i).encode()) for i in range(300)]
    reporter.connected(True)
    reporter.received(keys)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    handoff = Handoff[str]()
    assert apply_frames(handoff, data) == len(data) == FRAME_SIZE * 301
    assert handoff.priority_connected is True
    assert handoff.bulk_copy("alert/panic/pb-1", b"299", "b") == "paired"


# A stand-in for ``python -m flows.priority``: reports what its argv says, then behaves.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {root!r})
    from flows.handoff import message_key
    from flows.priority_lane import PipeReporter, exit_with_parent
    fd = int(sys.argv[sys.argv.index("--report-fd") + 1])
    mode = sys.argv[1]
    reporter = PipeReporter(fd)
    reporter.connected(True)
    reporter.received([message_key("alert/panic/pb-1", str(os.getpid()).encode())])
    if mode == "exit":
        sys.exit(3)
    exit_with_parent()
    while True:
        time.sleep(1)
    """
)


def child_command(tmp_path: object, mode: str) -> list[str]:
    script = os.path.join(str(tmp_path), "lane.py")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(script, "w") as f:
        f.write(CHILD.format(root=root))
    return [sys.executable, script, mode]


def test_lane_reports_reach_the_handoff_and_close_stops_the_child(tmp_path: object) -> None:
    handoff = Handoff[str]()
    lane = PriorityLane(handoff, child_command(tmp_path, "stay")).start()  # type: ignore[arg-type]
    try:
        wait_for(lambda: lane.pid is not None and handoff.priority_connected)
        pid = lane.pid
        assert pid is not None
        wait_for(lambda: handoff.bulk_copy("alert/panic/pb-1", str(pid).encode(), "b") == "paired")
    finally:
        lane.close(timeout_s=5)
    assert lane.pid is None
    assert handoff.priority_connected is False
    assert lane.starts == 1


def test_a_lane_that_exits_is_started_again(tmp_path: object) -> None:
    handoff = Handoff[str]()
    lane = PriorityLane(  # type: ignore[arg-type]
        handoff, child_command(tmp_path, "exit"), min_backoff_s=0.05, max_backoff_s=0.1
    ).start()
    try:
        wait_for(lambda: lane.starts >= 3)
    finally:
        lane.close(timeout_s=5)


def test_the_lane_exits_when_its_parent_is_killed(tmp_path: object) -> None:
    # A parent process that starts a lane and is then SIGKILLed: the lane must not outlive it.
    parent = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from flows.handoff import Handoff
        from flows.priority_lane import PriorityLane
        lane = PriorityLane(Handoff(), {child_command(tmp_path, "stay")!r}).start()
        while lane.pid is None:
            time.sleep(0.01)
        print(lane.pid, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child_pid = int(proc.stdout.readline())
    assert os.path.exists(f"/proc/{child_pid}")
    proc.kill()
    proc.wait(10)

    def gone() -> bool:
        try:
            with open(f"/proc/{child_pid}/stat") as f:
                return f.read().split()[2] == "Z"  # exited, not yet reaped
        except FileNotFoundError:
            return True

    wait_for(gone, timeout=10)


def test_the_lane_names_a_busy_metrics_port_in_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        read_fd, write_fd = os.pipe()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOC_")}
        env["NOC_PRIORITY_METRICS_PORT"] = str(port)
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.priority", "--report-fd", str(write_fd)],
            pass_fds=(write_fd,),
            env=env,
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(write_fd)
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert proc.wait(30) == 2
        os.close(read_fd)
    assert err.strip().splitlines() == [
        f"priority lane: cannot serve metrics on 127.0.0.1:{port} (Address already in use); "
        "set NOC_PRIORITY_METRICS_PORT to a free port or 0"
    ]
