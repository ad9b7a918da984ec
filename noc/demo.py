"""`noc demo`: the whole system on the provisioned services, with simulated traffic.

Starts, as child processes: the notification inbox (loopback capture of what Apprise sends),
the ingest flow, the API with the NOC page, the notifier, and the device simulator. Prints
the page's URL with an operator token, then runs until Ctrl-C (or ``--duration``) and stops
every child it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from noc.errors import NocError
from noc.settings import Settings


class DemoError(NocError):
    """A demo component failed to start."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


def _spawn(name: str, argv: Sequence[str], env: dict[str, str]) -> Child:
    proc = subprocess.Popen(list(argv), env=env, start_new_session=True)
    return Child(name, proc)


def _noc(*args: str) -> list[str]:
    return [sys.executable, "-m", "noc", *args]


def _token(env: dict[str, str], tenant: int) -> str:
    result = subprocess.run(
        _noc("token", "--tenant", str(tenant), "--role", "operator", "--subject", "demo"),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"could not issue a demo token: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]


def run_demo(settings: Settings, rate: float, duration: float | None, inbox_port: int) -> int:
    """Run every component until interrupted; returns the exit status. Idempotent set-up."""
    from storage.db import connect
    from storage.migrate import migrate

    with connect(settings.database.url, autocommit=True) as conn:
        migrate(conn)
    env = dict(os.environ)
    children: list[Child] = []
    try:
        # Seed the simulated estate first (the flow quarantines devices it does not know).
        seed = subprocess.run(_noc("simulate", "--count", "0"), env=env, check=False)
        if seed.returncode != 0:
            raise DemoError("seeding the demo registry failed (see above)")
        children.append(_spawn("inbox", _noc("inbox", "--port", str(inbox_port)), env))
        children.append(_spawn("flow", [sys.executable, "-m", "bytewax.run", "flows.ingest"], env))
        children.append(_spawn("api", _noc("api"), env))
        children.append(_spawn("notifier", _noc("notify"), env))
        time.sleep(3.0)  # let the flow subscribe before traffic starts
        sim_duration = str(duration if duration is not None else 10 * 365 * 24 * 3600)
        children.append(
            _spawn(
                "simulator",
                _noc("simulate", "--rate", str(rate), "--duration", sim_duration,
                     "--no-seed-registry"),
                env,
            )
        )  # fmt: skip
        token = _token(env, tenant=1)
        base = f"http://{settings.api.host}:{settings.api.port}"
        url = f"{base}/?token={token}"
        print("\nNOC Stream demo is running.", flush=True)
        print(f"  NOC page:  {url}", flush=True)
        print(f"  token:     {token}", flush=True)
        ingest = settings.ingest
        print(
            f"  metrics:   http://127.0.0.1:{ingest.metrics_port}/metrics (flow),"
            f" :{ingest.priority_metrics_port}/metrics (priority lane),"
            f" :{settings.notify.metrics_port}/metrics (notifier), {base}/metrics (API)"
        )
        print("  Ctrl-C stops everything.\n", flush=True)
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            for child in children:
                code = child.proc.poll()
                if code is not None and child.name != "simulator":
                    raise DemoError(f"{child.name} exited with status {code}")
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for child in reversed(children):
            if child.proc.poll() is None:
                os.killpg(child.proc.pid, signal.SIGINT)
        for child in reversed(children):
            try:
                child.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(child.proc.pid, signal.SIGKILL)
