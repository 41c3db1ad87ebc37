"""The OpenAI error body, ``{"error": {"code", "message", "param", "type"}}``, for every 4xx/5xx.

A database that cannot be reached (restarting, failing over, every session cut) answers
503 ``database_unavailable`` with ``Retry-After``: the request may simply be sent again,
as workers do with every call. Other unexpected errors answer 500 ``internal_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "ApiError",
    "database_unavailable",
    "error_body",
    "install_error_handlers",
    "no_nul",
    "video_not_found",
]

log = logging.getLogger("cinecloud.api")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    410: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    416: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
#: Seconds a client waits before sending a request the database could not serve again.
DB_RETRY_AFTER_S = 1


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers


def video_not_found(video_id: str, param: str = "video_id") -> ApiError:
    return ApiError(404, "video_not_found", f"no video with id '{video_id}'", param)


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"code": code, "message": message, "param": param, "type": kind}}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid value"))
    return (f"{param}: {msg}" if param else msg), param


def no_nul(value: str) -> str:
    """A text field's validator: NUL cannot be stored (PostgreSQL's text refuses it)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class RejectNul:
    """ASGI middleware: 400 ``invalid_value`` for a path or query string holding NUL
    (``%00``), which no id or parameter contains and PostgreSQL cannot compare with."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(scope["query_string"])
        ):
            body = error_body(400, "invalid_value", "the URL must not contain NUL characters")
            await JSONResponse(body, status_code=400)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _routes(app: Any) -> Iterable[Any]:
    """The app's routes, through included routers: FastAPI from 0.165 includes a router
    as one lazy entry, which ``iter_route_contexts`` expands."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are copied into the list
        return list(app.router.routes)
    return list(iter_route_contexts(app.router.routes))


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path (``Allow`` of a 405):
    Starlette names only the first route that matched the path, and a path such as
    ``/v1/videos/{id}`` has one route per method."""
    methods: set[str] = set()
    for route in _routes(request.app):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def database_unavailable(exc: OperationalError) -> bool:
    """Whether ``exc`` means the database is away or busy for now (a retry may pass),
    rather than a broken statement: a lost connection, any of PostgreSQL's operational
    errors (server down or shutting down, a cut session, a serialization failure), or a
    locked SQLite file."""
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    return type(orig).__module__.startswith("psycopg") or "database is locked" in str(orig)


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(RejectNul)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.status, exc.code, exc.message, exc.param),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(400, "invalid_value", message, param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)
        return JSONResponse(
            error_body(exc.status_code, code, str(exc.detail)),
            status_code=exc.status_code,
            headers=headers or None,
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            error_body(500, "internal_error", "internal server error"), status_code=500
        )

    @app.exception_handler(OperationalError)
    async def _database_error(request: Request, exc: OperationalError) -> JSONResponse:
        if not database_unavailable(exc):
            return await _unexpected(request, exc)
        # The connection failed or was cut (a restart, a failover): no bug to trace.
        log.warning("database unavailable: %s", str(exc.orig or exc).splitlines()[0])
        return JSONResponse(
            error_body(503, "database_unavailable", "the database is unavailable; retry shortly"),
            status_code=503,
            headers={"Retry-After": str(DB_RETRY_AFTER_S)},
        )
