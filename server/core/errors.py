"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Every module raises `APIError` (or one of its helpers) for anything a client did wrong or the
backend failed at; the app's exception handlers (`server.api.error_handlers`) turn it into a
response with the right status.

Decoding and fetching do not know which request field the audio came from (`file`, `url`, a chat
`input_audio` part, a RunPod `audio`), so they raise `InputError`, an `APIError` without a
parameter; the boundary that does know names the field (`exc.api_error("url")`).
"""

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

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


class InputError(APIError):
    """Audio or a URL that cannot be used: 400 (or 413 when too large), with a machine-readable code
    and no parameter until the boundary that knows the request's field names it."""

    def __init__(self, message: str, *, code: str, status: int = 400) -> None:
        super().__init__(status, message, code=code)

    def api_error(self, param: str | None) -> APIError:
        return APIError(self.status, self.message, param=param, code=self.code)
