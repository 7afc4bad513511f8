"""Ending a group of asyncio tasks."""

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel `tasks` and wait until every one has ended. What they returned or raised stays on them
    (`result()`, `exception()`, `cancelled()`) for the caller to read; nothing is raised here."""
    ending = list(tasks)
    for task in ending:
        task.cancel()
    await asyncio.gather(*ending, return_exceptions=True)
