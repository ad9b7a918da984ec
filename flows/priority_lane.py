"""The priority lane: the priority partition's dataflow in a process of its own.

On a two-core machine the bulk worker is busy most of the time; a panic handled by the same
worker waits for whatever batch of telemetry it is in the middle of (tens of milliseconds,
more when the machine is loaded), and the reader threads of both sessions share one GIL. So
the ingest flow starts the priority partition's dataflow (:mod:`flows.priority`) as a child
process, and the operating system schedules the two independently.

The two processes talk through one pipe, child to parent, in fixed frames of
:data:`FRAME_SIZE` bytes (atomic writes): ``C`` the priority session connected, ``D`` it
disconnected, ``K`` + a :func:`~flows.handoff.message_key` for each priority message received.
The parent feeds them into its :class:`~flows.handoff.Handoff`, which pairs the bulk copies.

Lifetime: the child's standard input is a pipe from the parent; when it reaches end of file
(the parent exited or was killed) the child exits at once, so a restarted flow never meets a
lane of its previous life. A child that exits on its own is started again with backoff
(1 s doubling to 30 s); meanwhile the handoff counts the lane as disconnected and the bulk
partition stores priority messages itself (at-least-once either way: storage is idempotent).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from flows.envelope import Inbound
from flows.handoff import Handoff

log = logging.getLogger(__name__)

KEY_SIZE = 16
FRAME_SIZE = 1 + KEY_SIZE
CONNECTED = b"C"
DISCONNECTED = b"D"
COPY = b"K"
_PAD = bytes(KEY_SIZE)


def encode_frames(kind: bytes, keys: Sequence[bytes] = ()) -> bytes:
    """Frames for a connection change (no keys) or for received messages (one per key)."""
    if kind == COPY:
        if any(len(k) != KEY_SIZE for k in keys):
            raise ValueError(f"message keys are {KEY_SIZE} bytes")
        return b"".join(COPY + k for k in keys)
    if kind not in (CONNECTED, DISCONNECTED) or keys:
        raise ValueError(f"not a connection frame: {kind!r}")
    return kind + _PAD


def apply_frames(handoff: Handoff[Any], data: bytes) -> int:
    """Apply whole frames to ``handoff``; returns how many bytes were used (a partial frame
    at the end is left for the next read)."""
    used = len(data) - len(data) % FRAME_SIZE
    keys: list[bytes] = []
    for at in range(0, used, FRAME_SIZE):
        kind = data[at : at + 1]
        if kind == COPY:
            keys.append(data[at + 1 : at + FRAME_SIZE])
            continue
        if keys:  # keep the order of copies and connection changes
            handoff.priority_copies(keys)
            keys = []
        if kind == CONNECTED:
            handoff.priority_connected = True
        elif kind == DISCONNECTED:
            handoff.priority_connected = False
        else:
            raise ValueError(f"unknown priority lane frame {kind!r}")
    if keys:
        handoff.priority_copies(keys)
    return used


class PipeReporter:
    """The child's side: writes frames to the report pipe (a file descriptor). Thread-safe."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def connected(self, up: bool) -> None:
        self._write(encode_frames(CONNECTED if up else DISCONNECTED))

    def received(self, keys: list[bytes]) -> None:
        self._write(encode_frames(COPY, keys))

    def _write(self, data: bytes) -> None:
        with self._lock:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]


def exit_with_parent(fd: int = 0) -> threading.Thread:
    """Child side: a daemon thread that ends the process when ``fd`` (standard input, the
    pipe from the parent) reaches end of file. Nothing in flight is acknowledged, so nothing is
    lost. Reads the descriptor itself (no buffered file object, whose lock a daemon thread
    would still hold at interpreter shutdown)."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 4096):
                pass
        log.warning("priority lane: the ingest flow is gone; exiting")
        logging.shutdown()
        os._exit(0)

    thread = threading.Thread(target=watch, name="noc-lane-parent-watch", daemon=True)
    thread.start()
    return thread


class PriorityLane:
    """The parent's side: starts the child, reads its reports, restarts it when it exits.

    ``command`` is the child's argv without the report option; ``--report-fd N`` is appended.
    """

    def __init__(
        self,
        handoff: Handoff[Inbound],
        command: Sequence[str],
        env: dict[str, str] | None = None,
        min_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._handoff = handoff
        self._command = list(command)
        self._env = env
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="noc-priority-lane", daemon=True)
        self.starts = 0
        """How many times the child was started."""

    @property
    def pid(self) -> int | None:
        """The running child's process id, if any."""
        with self._lock:
            proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> PriorityLane:
        self._thread.start()
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the child (SIGINT, then SIGKILL after ``timeout_s``) and stop restarting it.
        Idempotent."""
        self._closing.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        backoff = self._min_backoff_s
        while not self._closing.is_set():
            started = time.monotonic()
            try:
                code = self._run_once()
            except OSError as exc:
                log.error("priority lane: cannot start %s: %s", self._command, exc)
                code = None
            self._handoff.priority_connected = False
            if self._closing.is_set():
                return
            if time.monotonic() - started > 60:
                backoff = self._min_backoff_s  # it ran for a while: start again soon
            log.error("priority lane exited (code %s); restarting in %.0fs", code, backoff)
            if self._closing.wait(backoff):
                return
            backoff = min(backoff * 2, self._max_backoff_s)

    def _run_once(self) -> int:
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                [*self._command, "--report-fd", str(write_fd)],
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
                env=self._env,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        with self._lock:
            self._proc = proc
        self.starts += 1
        log.info("priority lane started (pid %d)", proc.pid)
        buffer = b""
        with os.fdopen(read_fd, "rb", buffering=0) as reports:
            while chunk := reports.read(64 * FRAME_SIZE):
                buffer += chunk
                buffer = buffer[apply_frames(self._handoff, buffer) :]
        code = proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        return code
