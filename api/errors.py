"""API errors and the one place that maps every error to an HTTP response.

Bodies are ``{"error": code, "detail": text}``. Storage errors keep their meaning
(NotFound -> 404, AlertTransitionError/Conflict -> 409, InvalidReference -> 422,
DatabaseUnavailable, a lost connection or an exhausted pool -> 503); anything else from
storage is a 500 whose detail is logged, not returned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.types import ExceptionHandlersMap
from psycopg_pool import PoolTimeout

from noc.errors import NocError
from operators.errors import ConfigError
from storage.errors import AlertTransitionError, DatabaseUnavailable, NotFound, StorageError
from storage.queries import Conflict, InvalidReference

log = logging.getLogger(__name__)


class ApiError(NocError):
    """Root of errors the API raises itself."""


class Unauthorized(ApiError):
    """No usable bearer token (missing, malformed, bad signature, expired, revoked)."""


class Forbidden(ApiError):
    """The token is valid but its role may not do this."""


class BadRequest(ApiError):
    """The request is well-formed but its values are not acceptable."""


def _body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def _handler(
    status: int, code: str
) -> Callable[[Request[Any, Any, Any], Exception], Response[Any]]:
    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        del request
        headers = {"WWW-Authenticate": 'Bearer realm="noc"'} if status == 401 else None
        return Response(_body(code, str(exc)), status_code=status, headers=headers)

    return handle


def _driver_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc)
    return Response(_body("database_unavailable", "the database is unavailable"), status_code=503)


def _storage_failure(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return Response(_body("storage_error", "the database rejected the request"), status_code=500)


def _http_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    del request
    assert isinstance(exc, HTTPException)
    body: dict[str, Any] = _body(_HTTP_CODES.get(exc.status_code, "http_error"), exc.detail)
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
}

EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    Unauthorized: _handler(401, "unauthorized"),
    NotAuthorizedException: _handler(401, "unauthorized"),
    Forbidden: _handler(403, "forbidden"),
    PermissionDeniedException: _handler(403, "forbidden"),
    BadRequest: _handler(400, "bad_request"),
    ConfigError: _handler(422, "invalid"),
    InvalidReference: _handler(422, "invalid_reference"),
    NotFound: _handler(404, "not_found"),
    AlertTransitionError: _handler(409, "invalid_transition"),
    Conflict: _handler(409, "conflict"),
    DatabaseUnavailable: _handler(503, "database_unavailable"),
    StorageError: _storage_failure,
    # driver errors that escaped a storage function (a safety net; storage translates its own)
    psycopg.OperationalError: _driver_unavailable,
    PoolTimeout: _driver_unavailable,
    psycopg.Error: _storage_failure,
    HTTPException: _http_exception,
}
"""Every mapping of an exception to a response, registered on the app by the factory."""
