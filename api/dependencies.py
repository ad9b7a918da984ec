"""Dependency providers, all in one place (registered on the app by the factory)."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from psycopg_pool import ConnectionPool

from api.auth import Principal
from api.errors import Unauthorized
from api.state import ApiState
from noc.settings import Settings

PoolDep = NamedDependency[ConnectionPool[Any]]
"""Handler parameter ``pool``: the synchronous pool (handlers using it run in threads)."""
PrincipalDep = NamedDependency[Principal]
"""Handler parameter ``principal``: the authenticated caller."""
SettingsDep = NamedDependency[Settings]
"""Handler parameter ``settings``."""
ApiDep = NamedDependency[ApiState]
"""Handler parameter ``api``: settings and connections."""


def provide_api(state: State) -> ApiState:
    """The running app's settings and connections."""
    api: ApiState = state.noc
    return api


def provide_pool(state: State) -> ConnectionPool[Any]:
    """The synchronous connection pool (for handlers running in worker threads)."""
    return provide_api(state).pool


def provide_settings(state: State) -> Settings:
    """The settings the app was built with."""
    return provide_api(state).settings


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The caller, as authenticated by :class:`api.auth.TokenAuthMiddleware`."""
    user = request.scope.get("user")
    if not isinstance(user, Principal):
        raise Unauthorized("not authenticated")
    return user


DEPENDENCIES = {
    "api": Provide(provide_api, sync_to_thread=False),
    "pool": Provide(provide_pool, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "principal": Provide(provide_principal, sync_to_thread=False),
}
