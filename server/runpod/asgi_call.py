"""One HTTP request through an ASGI app inside this process, its response read as the app sends it.

httpx's `ASGITransport` collects the whole response before returning it, so a stream would reach
a RunPod job only at its end. Here the app runs in a task of its own: it is given the request
body, and each `http.response.body` message reaches the caller as soon as it is sent. When the
caller is done before the app (the job is cancelled, or its consumer stops), the app receives
`http.disconnect`, as from a client that hung up: the routes watch for it and abort their vLLM
requests (a streaming response listens for it, since the scope says ASGI spec 2.3 as uvicorn's
does). A route that is still running after `DISCONNECT_GRACE_S` is cancelled.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Scope

log = logging.getLogger("runpod.asgi")

DISCONNECT_GRACE_S = 2.0

# What the app's task puts on its queue: a message it sent, or None once it has ended.
Messages = asyncio.Queue[Message | None]


async def _next(messages: Messages, app_task: "asyncio.Task[None]") -> Message:
    """The next message the app sent; the app's exception once it has ended (raised or not)."""
    message = await messages.get()
    if message is None:
        await app_task  # raises what the app raised
        raise RuntimeError("The app ended without completing its response.")
    return message


class InProcessResponse:
    """The status and headers the app answered with, and its body as the app sends it."""

    def __init__(self, start: Message, messages: Messages, app_task: "asyncio.Task[None]") -> None:
        if start["type"] != "http.response.start":
            raise RuntimeError(f"The app sent {start['type']!r} before `http.response.start`.")
        self.status: int = start["status"]
        self.headers = Headers(raw=list(start.get("headers") or []))
        self._messages = messages
        self._app_task = app_task

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks as they are sent; then the app's end, so that what it raises is raised here."""
        while True:
            message = await _next(self._messages, self._app_task)
            if message["type"] != "http.response.body":
                continue
            if body := message.get("body"):
                yield body
            if not message.get("more_body", False):
                break
        await self._app_task

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])


@asynccontextmanager
async def request(app: ASGIApp, scope: Scope, body: bytes = b"") -> AsyncIterator[InProcessResponse]:
    """Send `scope` with `body` to `app`; the response once the app has started it.

    Leaving the block before the app has ended disconnects it, then cancels it after the grace.
    """
    messages: Messages = asyncio.Queue()
    disconnected = asyncio.Event()
    unread: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        if unread:
            return unread.pop()
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if not disconnected.is_set():  # as at a server, what is sent after the disconnect is dropped
            messages.put_nowait(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            messages.put_nowait(None)

    app_task = asyncio.create_task(run(), name=f"in-process {scope.get('method')} {scope.get('path')}")
    try:
        yield InProcessResponse(await _next(messages, app_task), messages, app_task)
    finally:
        disconnected.set()
        await _wind_down(app_task)


async def _wind_down(app_task: "asyncio.Task[None]") -> None:
    """Give the disconnected app the grace to end by itself, then cancel it; wait until it has ended."""
    if not app_task.done():
        try:
            await asyncio.wait({app_task}, timeout=DISCONNECT_GRACE_S)
        finally:
            app_task.cancel()
            await asyncio.wait({app_task})
    if not app_task.cancelled() and (exc := app_task.exception()) is not None:
        # Raised to the caller already if it read the response to its end; else nobody waits for it.
        log.debug("the app ended with %s after its caller left", type(exc).__name__)
