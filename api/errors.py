"""One error body for every failure: `{"error": {"code", "message", "details": [...]}}`."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import Match

from api.schemas import ErrorBody
from models.spec import describe_errors


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers  # e.g. Retry-After on 429, WWW-Authenticate on 401


def _error(description: str, **headers: str) -> dict[str, Any]:
    documented = {
        name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
    }
    return {"model": ErrorBody, "description": description, "headers": documented}


# The error answers any route may give, documented once for all of them (api/main.py).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("the body could not be read as JSON text (e.g. not UTF-8)"),
    401: _error(
        "no API key, or an invalid or revoked one",
        **{"WWW-Authenticate": "Bearer"},
    ),
    403: _error("over one of the key's limits (job size)"),
    404: _error("no such resource, or another owner's"),
    409: _error("the resource's state does not allow it (e.g. resuming a finished study)"),
    413: _error("request body over the server's limit"),
    422: _error("invalid request; `details` names each bad field"),
    429: _error(
        "over the key's request rate or active-job limit",
        **{"Retry-After": "seconds to wait (rate limit)"},
    ),
    503: _error("the database or the broker did not answer"),
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: list | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = describe_errors(list(exc.errors()))
        fields = ", ".join(d["field"] or "body" for d in details)
        return error_response(422, "validation_error", f"invalid request: {fields}", details)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
            413: "body_too_large",
        }
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(
            exc.status_code,
            code.get(exc.status_code, "http_error"),
            str(exc.detail),
            headers=headers,
        )

    # The database away (refused, reset, restarting, pool exhausted): 503 with the reason's
    # first line and a hint when to retry; never a stack trace. Other database errors are bugs.
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
        return error_response(
            503,
            "database_unavailable",
            f"the database did not answer: {reason[0]}",
            headers={"Retry-After": "5"},
        )

    # A value the database cannot take or compare: a NUL character in text, a number past its
    # column's range. PostgreSQL refuses what SQLite accepts; either way it is the request's fault
    # (found by benchmarks/fuzz.py: a NUL in a query parameter was a 500).
    @app.exception_handler(DataError)
    async def _bad_value(_: Request, exc: DataError) -> JSONResponse:
        reason = str(exc.orig).strip().splitlines() or [type(exc.orig).__name__]
        return error_response(422, "invalid_value", f"a value the database refuses: {reason[0]}")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's own 405 lists only the methods of
    the first route whose path matched, and FastAPI makes one route per method."""
    allowed = []
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed
