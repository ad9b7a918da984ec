"""`noc token` and `noc api` as a user runs them: real processes, real database, real API."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.api.conftest import SECRET, Api


def noc(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOC_")}
    env.update(NOC_DATABASE_URL=db, NOC_TOKEN_SECRET=SECRET)
    return subprocess.run(
        [sys.executable, "-m", "noc", *args],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_issue_use_and_revoke_a_token(api: Api) -> None:
    issued = noc("token", "--tenant", "globex", "--role", "admin", "--subject", "sam", db=api.db)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert "\n" not in token and token.count(".") == 2
    jti = issued.stderr.split()[1]
    assert "tenant 2 role admin" in issued.stderr

    headers = {"Authorization": f"Bearer {token}"}
    me = httpx.get(f"{api.url}/api/me", headers=headers).json()
    assert (me["tenant_id"], me["role"], me["subject"]) == (2, "admin", "sam")

    revoked = noc("token", "--revoke", jti, db=api.db)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    r = httpx.get(f"{api.url}/api/me", headers=headers)
    assert r.status_code == 401 and r.json()["detail"] == "token revoked"


def test_token_by_tenant_id_with_ttl(api: Api) -> None:
    issued = noc("token", "--tenant", "1", "--subject", "ops", "--ttl-hours", "0.5", db=api.db)
    assert issued.returncode == 0, issued.stderr
    me = httpx.get(
        f"{api.url}/api/me", headers={"Authorization": f"Bearer {issued.stdout.strip()}"}
    )
    assert me.json()["role"] == "operator"


def test_user_errors_are_one_line(api: Api, empty_db: str) -> None:
    cases = [
        (("token", "--tenant", "nobody", "--subject", "x"), "no tenant 'nobody'", api.db),
        (("token", "--tenant", "acme"), "--subject are required", api.db),
        (
            ("token", "--tenant", "acme", "--subject", "x", "--ttl-hours", "-1"),
            "must be > 0",
            api.db,
        ),
        (("token", "--revoke", "nonsense"), "not a token id", api.db),
        (("api", "--port", "1"), "not migrated; run `noc db migrate`", empty_db),
    ]
    for args, message, db in cases:
        result = noc(*args, db=db)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
