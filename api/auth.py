"""Bearer tokens: HS256 JWTs scoped to one tenant and role, recorded so they can be revoked.

Claims: ``tenant`` (int), ``role`` (operator | admin | analyst), ``sub`` (who), ``jti``
(UUID, the ``api_tokens`` key), ``iat``, ``exp``. A token is accepted when its signature and
expiry check out *and* its ``api_tokens`` row exists, matches the claims and is not revoked.

REST: ``Authorization: Bearer <token>``, checked by :class:`TokenAuthMiddleware` for every
route except the public ones (the page, static files, ``/schema``, ``/metrics``,
``/healthz``; the WebSocket authenticates itself, see :mod:`api.ws`). Roles: ``analyst`` reads;
``operator`` also acts on alerts; ``admin`` also edits zones.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jwt
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from api.errors import Forbidden, Unauthorized
from storage.tokens import ROLES, TokenRecord, load_token

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler
    from psycopg_pool import AsyncConnectionPool

ALGORITHM = "HS256"
ACTING_ROLES = ("operator", "admin")
"""Roles that may acknowledge, resolve and dismiss alerts."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: every query and socket is scoped to ``tenant_id``."""

    tenant_id: int
    role: str
    subject: str
    token_id: uuid.UUID


def issue_token(
    secret: str,
    tenant_id: int,
    role: str,
    subject: str,
    ttl: timedelta,
    now: datetime | None = None,
) -> tuple[str, TokenRecord]:
    """A signed token and the ``api_tokens`` row to record for it (the caller stores it)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not subject.strip():
        raise ValueError("subject must name who the token is for")
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    record = TokenRecord(uuid.uuid4(), tenant_id, subject, role, issued, issued + ttl, None)
    claims = {
        "tenant": tenant_id,
        "role": role,
        "sub": subject,
        "jti": str(record.token_id),
        "iat": int(issued.timestamp()),
        "exp": int(record.expires_at.timestamp()) if record.expires_at else None,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), record


def decode_token(secret: str, token: str) -> Principal:
    """Check signature, expiry and claims; raise Unauthorized (saying why) otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub", "jti", "tenant", "role"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    tenant, role, sub = claims["tenant"], claims["role"], claims["sub"]
    if not isinstance(tenant, int) or isinstance(tenant, bool) or role not in ROLES:
        raise Unauthorized("invalid token: bad tenant or role claim")
    try:
        token_id = uuid.UUID(str(claims["jti"]))
    except ValueError:
        raise Unauthorized("invalid token: bad jti claim") from None
    return Principal(tenant, role, str(sub), token_id)


async def authenticate(
    token: str, secret: str, pool: AsyncConnectionPool[Any], now: datetime | None = None
) -> Principal:
    """The principal of a token that is valid and recorded, not revoked; else Unauthorized."""
    principal = decode_token(secret, token)
    async with pool.connection() as aconn:
        record = await load_token(aconn, principal.token_id)
    if record is None or (record.tenant_id, record.role, record.subject) != (
        principal.tenant_id,
        principal.role,
        principal.subject,
    ):
        raise Unauthorized("token not recognised")
    if not record.usable(now or datetime.now(UTC)):
        raise Unauthorized("token revoked" if record.revoked_at else "token expired")
    return principal


def bearer(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; Unauthorized otherwise."""
    if not header:
        raise Unauthorized("missing Authorization: Bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


class TokenAuthMiddleware(AbstractAuthenticationMiddleware):
    """Sets ``request.user`` to the :class:`Principal` of the request's bearer token."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        state = connection.app.state.noc
        token = bearer(connection.headers.get("authorization"))
        principal = await authenticate(token, state.settings.api.token_secret, state.apool)
        return AuthenticationResult(user=principal, auth=token)


def require_role(*roles: str) -> Any:
    """A Litestar guard admitting only principals with one of ``roles``."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        del handler
        principal = connection.user
        if not isinstance(principal, Principal) or principal.role not in roles:
            raise Forbidden(f"requires role {' or '.join(roles)}")

    return guard
