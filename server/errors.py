"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Every module raises `APIError` (or one of its helpers) for anything a client did wrong or the
backend failed at; the app's exception handlers turn it into a response with the right status.
"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("edge.errors")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "backend_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class APIError(Exception):
    """A failure to report to the client in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, *, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def too_large(message: str, *, param: str | None = "file") -> APIError:
    return APIError(413, message, param=param, code="too_large")


def validation_error(exc: ValidationError) -> APIError:
    """A pydantic validation error as a 400 naming the first field at fault."""
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    param = str(first["loc"][0]) if first["loc"] else None
    if first["type"] == "literal_error":
        message = f"`{loc}` must be one of {first['ctx']['expected']}, not {first['input']!r}."
    else:
        message = f"Invalid `{loc}`: {first['msg'].removeprefix('Value error, ')}."
    return bad_request(message, param=param)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app can raise answer in OpenAI's shape."""
    from server.input_errors import InputError  # it builds on APIError, defined above

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return exc.api_error(None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "Unknown route." if exc.status_code == 404 else str(exc.detail)
        code = "unknown_route" if exc.status_code == 404 else None
        return APIError(exc.status_code, message, code=code, headers=dict(exc.headers or {})).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "form")]
        param = ".".join(loc) or None
        message = f"Invalid request: {first.get('msg', 'malformed body')}" + (f" ({param})" if param else "")
        return APIError(422, message, param=param, code="invalid_request").response()

    app.add_middleware(UnexpectedErrors)


class UnexpectedErrors:
    """Answer an unexpected exception with a 500 in OpenAI's shape and `Connection: close`.

    Starlette's own last-resort handler answers and then re-raises, and the server then drops the
    connection without having said so: a client reusing it gets a reset. Here the error is logged
    and answered once, and the client is told to reconnect (the request body may be unread). Once
    a response has started nothing can be answered, so the error goes on to the server.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as exc:
            if started:
                raise
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            error = APIError(
                500, f"Internal error: {type(exc).__name__}", code="internal_error", headers={"Connection": "close"}
            )
            await error.response()(scope, receive, send)
