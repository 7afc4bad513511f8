"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Every module raises `APIError` (or one of its helpers) for anything a client did wrong or the
backend failed at; the app's exception handlers turn it into a response with the right status.
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return APIError(500, f"Internal error: {type(exc).__name__}", code="internal_error").response()
