"""``/api/alerts``: list (filters, keyset paging), detail with history, lifecycle actions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from litestar import Controller, get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from psycopg_pool import ConnectionPool

from api import commands
from api.auth import ACTING_ROLES, Principal, require_role
from api.dependencies import PoolDep, PrincipalDep, SettingsDep
from api.errors import BadRequest
from noc.settings import Settings
from storage import alerts

StatusFilter = Literal["new", "acknowledged", "resolved", "false_alarm", "open"]
Severity = Literal["critical", "high", "medium", "low", "info"]


@dataclass(frozen=True)
class AlertPage:
    """One page, newest first; pass ``next_before_id`` as ``before_id`` for the next one."""

    items: list[alerts.Alert]
    next_before_id: int | None


@dataclass(frozen=True)
class AlertAction:
    """Optional body of an action: a note for the audit trail."""

    note: str = ""


@dataclass(frozen=True)
class ActionResult:
    """The alert after the action, and the device command it sent (acknowledge only)."""

    alert: alerts.Alert
    command: commands.CommandOutcome | None = None


Transition = Callable[..., alerts.Transition]
MAX_NOTE = 2000


class AlertController(Controller):
    path = "/api/alerts"
    tags = ("alerts",)

    @get(sync_to_thread=True, summary="List alerts, newest first")
    def list_alerts(
        self,
        pool: PoolDep,
        principal: PrincipalDep,
        status: FromQuery[StatusFilter | None] = None,
        severity: FromQuery[Severity | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=alerts.MAX_LIST)] = 50,
        before_id: Annotated[int | None, QueryParameter(ge=1)] = None,
    ) -> AlertPage:
        with pool.connection() as conn:
            items = alerts.list_alerts(
                conn, principal.tenant_id, status, severity, limit, before_id
            )
        return AlertPage(items, items[-1].alert_id if len(items) == limit else None)

    @get("/{alert_id:int}", sync_to_thread=True, summary="An alert with its history")
    def get_alert(
        self, pool: PoolDep, principal: PrincipalDep, alert_id: FromPath[int]
    ) -> alerts.AlertDetail:
        with pool.connection() as conn:
            return alerts.get_alert(conn, principal.tenant_id, alert_id)

    @post(
        "/{alert_id:int}/acknowledge",
        sync_to_thread=True,
        status_code=200,
        guards=[require_role(*ACTING_ROLES)],
        summary="Acknowledge; tells the alert's device on its command topic",
    )
    def acknowledge(
        self,
        pool: PoolDep,
        settings: SettingsDep,
        principal: PrincipalDep,
        alert_id: FromPath[int],
        data: JSONBody[AlertAction | None] = None,
    ) -> ActionResult:
        return _act(pool, settings, principal, alert_id, data, alerts.acknowledge)

    @post(
        "/{alert_id:int}/resolve",
        sync_to_thread=True,
        status_code=200,
        guards=[require_role(*ACTING_ROLES)],
        summary="Resolve",
    )
    def resolve(
        self,
        pool: PoolDep,
        settings: SettingsDep,
        principal: PrincipalDep,
        alert_id: FromPath[int],
        data: JSONBody[AlertAction | None] = None,
    ) -> ActionResult:
        return _act(pool, settings, principal, alert_id, data, alerts.resolve)

    @post(
        "/{alert_id:int}/false-alarm",
        sync_to_thread=True,
        status_code=200,
        guards=[require_role(*ACTING_ROLES)],
        summary="Close as a false alarm",
    )
    def false_alarm(
        self,
        pool: PoolDep,
        settings: SettingsDep,
        principal: PrincipalDep,
        alert_id: FromPath[int],
        data: JSONBody[AlertAction | None] = None,
    ) -> ActionResult:
        return _act(pool, settings, principal, alert_id, data, alerts.mark_false_alarm)


def _act(
    pool: ConnectionPool[Any],
    settings: Settings,
    principal: Principal,
    alert_id: int,
    data: AlertAction | None,
    transition: Transition,
) -> ActionResult:
    """The transition (with its ``alert_update`` event) in one transaction, then the command."""
    note = data.note if data else ""
    if len(note) > MAX_NOTE:
        raise BadRequest(f"note is longer than {MAX_NOTE} characters")
    with pool.connection() as conn, conn.transaction():
        done = transition(conn, principal.tenant_id, alert_id, principal.subject, note)
    outcome = commands.send(settings.mqtt, done.command) if done.command else None
    return ActionResult(done.alert, outcome)
