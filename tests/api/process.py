"""``noc api`` as a child process on a free loopback port (browser test, benchmark)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from tests.integration.harness import ROOT, free_port, wait_until


class ApiProcess:
    """The real command, configured only through ``NOC_*`` variables."""

    def __init__(self, database_url: str, token_secret: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NOC_")}
        self.env.update(
            NOC_DATABASE_URL=database_url,
            NOC_API_HOST="127.0.0.1",
            NOC_API_PORT=str(self.port),
            NOC_TOKEN_SECRET=token_secret,
            **env,
        )
        self.log = tempfile.NamedTemporaryFile(prefix="noc-api-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> ApiProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "noc", "api"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"noc api exited:\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout, "noc api to become healthy")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]
