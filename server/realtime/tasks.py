"""The background tasks of a realtime session."""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from server.core.tasks import cancel_and_wait

log = logging.getLogger("edge.realtime")


class TaskSet:
    """Tasks that live as long as their owner: a failure is logged, `aclose()` cancels them all."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task:
        task = asyncio.create_task(coroutine, name=f"realtime-{name}")
        self.track(task)
        return task

    def track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def aclose(self) -> None:
        """Cancel every task still running and wait for them to end (in-flight vLLM requests abort)."""
        await cancel_and_wait(self._tasks)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("realtime task %s failed", task.get_name(), exc_info=task.exception())
