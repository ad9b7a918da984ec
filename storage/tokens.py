"""API tokens: the record of every issued bearer token, so that it can be revoked.

The token itself (a signed JWT) is built by :mod:`api.auth`; this module stores and reads its
row in ``api_tokens`` (keyed by the token's ``jti``). A token is usable while its row exists,
is not revoked and has not expired.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from storage.errors import NotFound

if TYPE_CHECKING:
    import psycopg

ROLES = ("operator", "admin", "analyst")


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """One row of ``api_tokens``."""

    token_id: uuid.UUID
    tenant_id: int
    subject: str
    role: str
    issued_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def usable(self, now: datetime) -> bool:
        """Not revoked and not expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


_COLUMNS = "token_id, tenant_id, subject, role, issued_at, expires_at, revoked_at"


def resolve_tenant(conn: psycopg.Connection, tenant: str) -> tuple[int, str]:
    """``(tenant_id, name)`` of a tenant given by id or by name; NotFound if there is none."""
    if tenant.isdigit():
        row = conn.execute(
            "SELECT tenant_id, name FROM tenants WHERE tenant_id = %s", (int(tenant),)
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT tenant_id, name FROM tenants WHERE name = %s", (tenant,)
        ).fetchone()
    if row is None:
        raise NotFound(f"no tenant {tenant!r}")
    return int(row[0]), str(row[1])


def record_token(conn: psycopg.Connection, record: TokenRecord) -> None:
    """Store a newly issued token's row."""
    conn.execute(
        f"INSERT INTO api_tokens ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            record.token_id,
            record.tenant_id,
            record.subject,
            record.role,
            record.issued_at,
            record.expires_at,
            record.revoked_at,
        ),
    )


def revoke_token(conn: psycopg.Connection, token_id: uuid.UUID) -> TokenRecord:
    """Revoke a token (idempotent: the first revocation time is kept); NotFound if unknown."""
    row = conn.execute(
        f"UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_id = %s"
        f" RETURNING {_COLUMNS}",
        (token_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no token {token_id}")
    return _record(row)


async def load_token(
    aconn: psycopg.AsyncConnection[Any], token_id: uuid.UUID
) -> TokenRecord | None:
    """The token's row, or None if it was never recorded."""
    cur = await aconn.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE token_id = %s", (token_id,))
    row = await cur.fetchone()
    return _record(row) if row is not None else None


def _record(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(
        token_id=row[0],
        tenant_id=int(row[1]),
        subject=str(row[2]),
        role=str(row[3]),
        issued_at=row[4],
        expires_at=row[5],
        revoked_at=row[6],
    )
