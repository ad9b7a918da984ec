"""``noc api`` and ``noc token``: registered on the ``noc`` parser by ``noc.commands``.

Imports of the web stack happen inside the handlers, so ``noc --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import timedelta

from noc.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``noc api`` and ``noc token``."""
    api = sub.add_parser(
        "api",
        help="serve the NOC API, WebSocket and page (Litestar + uvicorn)",
        description=(
            "Serve REST under /api, the event WebSocket (NOC_WS_PATH), the NOC page at /, "
            "OpenAPI at /schema and Prometheus metrics at /metrics. Stops on SIGINT/SIGTERM."
        ),
    )
    api.add_argument("--host", default=None, help="listen address (NOC_API_HOST)")
    api.add_argument("--port", type=int, default=None, help="listen port (NOC_API_PORT)")
    api.set_defaults(handler=_cmd_api)

    token = sub.add_parser(
        "token",
        help="issue (or revoke) a bearer token for the API",
        description=(
            "Print a signed token scoped to one tenant and role, recorded in api_tokens so it "
            "can be revoked with --revoke JTI. Open the NOC page with /?token=TOKEN."
        ),
    )
    token.add_argument("--tenant", help="tenant id or name")
    token.add_argument(
        "--role", choices=("operator", "admin", "analyst"), default="operator", help="(operator)"
    )
    token.add_argument("--subject", help="who the token is for (recorded as the actor)")
    token.add_argument(
        "--ttl-hours", type=float, default=None, help="lifetime in hours (NOC_TOKEN_TTL_HOURS)"
    )
    token.add_argument("--revoke", metavar="JTI", default=None, help="revoke this token id")
    token.set_defaults(handler=_cmd_token)


def _cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from api.server import serve
    from noc import logs

    logs.configure(settings.log_level)
    return serve(settings, args.host, args.port)


def _cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from api.auth import issue_token
    from api.errors import BadRequest
    from storage.db import connect
    from storage.tokens import record_token, resolve_tenant, revoke_token

    with connect(settings.database.url, autocommit=True, application_name="noc-token") as conn:
        if args.revoke is not None:
            try:
                token_id = uuid.UUID(args.revoke)
            except ValueError:
                raise BadRequest(f"--revoke {args.revoke!r}: not a token id (jti)") from None
            record = revoke_token(conn, token_id)
            who = f"{record.subject}, {record.role}, tenant {record.tenant_id}"
            print(f"revoked {record.token_id} ({who}) at {record.revoked_at}")
            return 0
        if not args.tenant or not args.subject:
            raise BadRequest("--tenant and --subject are required to issue a token")
        ttl_hours = settings.api.token_ttl_hours if args.ttl_hours is None else args.ttl_hours
        if not ttl_hours > 0:
            raise BadRequest(f"--ttl-hours {args.ttl_hours}: must be > 0")
        tenant_id, _name = resolve_tenant(conn, args.tenant)
        try:
            token, record = issue_token(
                settings.api.token_secret, tenant_id, args.role, args.subject,
                timedelta(hours=ttl_hours),
            )  # fmt: skip
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        record_token(conn, record)
    print(token)
    expires = record.expires_at.isoformat() if record.expires_at else "never"
    print(f"jti {record.token_id} tenant {tenant_id} role {record.role} expires {expires}",
          file=sys.stderr)  # fmt: skip
    return 0
