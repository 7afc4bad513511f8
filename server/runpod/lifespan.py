"""An ASGI app's lifespan run inside this process: started once, on the event loop of its first
user, and shut down in order when asked or when that event loop ends.

The RunPod SDK runs jobs on an event loop it creates and closes itself, with no hook before the
first job or after the last. So the lifespan starts with the first job (which waits for it, as do
the jobs that come meanwhile), and its task lives until the loop ends: when the loop cancels the
tasks left at its end (the worker shutting down), the app is told to shut down rather than torn
down, so its services close as at the HTTP edge's shutdown.
"""

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message

log = logging.getLogger("runpod.lifespan")


class Lifespan:
    """The lifespan of `app`; `state` is the lifespan state each request's scope starts from."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.state: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()

    async def started(self) -> None:
        """Start the app the first time, and wait until it has started; raise if it cannot."""
        if self._started is None:  # no await before the task exists: concurrent first jobs share it
            loop = asyncio.get_running_loop()
            self._started = loop.create_future()
            self._task = loop.create_task(self._run(self._started), name="edge-app-lifespan")
        # Shielded: a job cancelled while waiting must not cancel the start the others wait for.
        await asyncio.shield(self._started)

    async def aclose(self) -> None:
        """Shut the app down (if it was started) and wait until it has."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self, started: asyncio.Future[None]) -> None:
        startup_sent = False

        async def receive() -> Message:
            nonlocal startup_sent
            if not startup_sent:
                startup_sent = True
                return {"type": "lifespan.startup"}
            try:
                await self._stop.wait()
            except asyncio.CancelledError:
                # The event loop is ending with the worker: shut the app down in order.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
            return {"type": "lifespan.shutdown"}

        async def send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                started.set_result(None)
            elif message["type"] == "lifespan.startup.failed":
                started.set_exception(RuntimeError("The edge app did not start (the worker's log says why)."))
            elif message["type"] == "lifespan.shutdown.failed":
                log.error("the edge app's shutdown failed: %s", message.get("message"))

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self._app(scope, receive, send)
        except Exception:
            log.exception("the edge app's lifespan failed")
        finally:
            if not started.done():
                started.set_exception(RuntimeError("The edge app ended before it started."))
        log.info("the edge app stopped")
