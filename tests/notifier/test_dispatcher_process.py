"""``noc notify`` as a real process, SIGKILLed mid-send and restarted: every notification is
delivered, and only the one in flight at the kill may arrive twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.writer import BatchWriter
from tests.notifier.support import (
    CaptureServer,
    add_recipients,
    alarm,
    migrated_scratch,
    query,
    reset,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]
N = 20


@pytest.fixture(scope="module")
def shared_db(postgres: str) -> Iterator[str]:
    yield from migrated_scratch(postgres)


@pytest.fixture
def db(shared_db: str) -> str:
    return reset(shared_db)


def start(db: str, log: Path, name: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOC_")}
    env.update(
        NOC_DATABASE_URL=db,
        NOC_NOTIFY_LEASE_S="2",
        NOC_NOTIFY_POLL_S="0.1",
        NOC_NOTIFY_BATCH="5",
        NOC_NOTIFY_METRICS_PORT="0",
        NOC_NOTIFY_EMAIL_PER_WINDOW="1000",
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "noc", "notify", "--name", name],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def statuses(db: str) -> dict[str, int]:
    return {
        str(s): int(n)
        for s, n in query(db, "SELECT status, count(*) FROM notification_outbox GROUP BY 1")
    }


def test_killed_dispatcher_redelivers_at_most_the_one_in_flight(db: str, tmp_path: Path) -> None:
    log = tmp_path / "notify.log"
    with CaptureServer(delay_s=0.3) as capture:
        add_recipients(db, [("mail", "email", capture.url("mail"), 1)])
        BatchWriter(db).write([alarm(i, f"src-{i:02d}") for i in range(N)])
        assert statuses(db) == {"pending": N}

        first = start(db, log, "first")
        try:
            # The endpoint holds each response 0.3 s: after the 5th arrives, one is in flight.
            wait_for(lambda: len(capture.snapshot()) >= 5, 60, "5 deliveries", step=0.01)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        at_kill = statuses(db)
        received_at_kill = len(capture.snapshot())
        assert at_kill.get("sending", 0) >= 1, at_kill  # leased rows left behind
        assert at_kill.get("sent", 0) < N

        second = start(db, log, "second")
        try:
            wait_for(lambda: statuses(db) == {"sent": N}, 60, f"all {N} sent ({log.read_text()})")
            settled = len(capture.snapshot())
            time.sleep(2.5)  # steady state: a whole lease and many polls later, nothing more
            second_done = query(
                db, "SELECT count(*) FROM notification_outbox WHERE claimed_by = 'second'"
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0, log.read_text()
        assert len(capture.snapshot()) == settled

    titles = Counter(c.title for c in capture.snapshot())
    assert len(titles) == N  # every notification delivered
    duplicates = {t: n for t, n in titles.items() if n > 1}
    assert sum(n - 1 for n in duplicates.values()) <= 1, duplicates  # only the one in flight
    assert received_at_kill >= 5 and second_done[0][0] >= 1
    sent_once = query(
        db,
        "SELECT count(*) FROM notification_deliveries WHERE ok GROUP BY outbox_id HAVING count(*) > 1",
    )
    assert sent_once == []  # the killed attempt was never recorded: one logged success each
