"""The app's answers to every error it can raise, in OpenAI's shape (`server.core.errors`)."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.core.errors import APIError

log = logging.getLogger("edge.errors")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app can raise answer in OpenAI's shape (an `InputError` is an `APIError`
    with no parameter)."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

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
    a response has started nothing can be answered, so the error goes on to the server. A client
    gone before its body was read (or cut off by `wire_limits`, which says so) is no error of the edge.
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
        except ClientDisconnect:
            return  # nobody to answer
        except Exception as exc:
            if started:
                raise
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            error = APIError(
                500, f"Internal error: {type(exc).__name__}", code="internal_error", headers={"Connection": "close"}
            )
            await error.response()(scope, receive, send)
