"""Ending a group of asyncio tasks."""

import asyncio
from collections.abc import Iterable
from typing import Any

import anyio


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], *, shielded: bool = False) -> None:
    """Cancel `tasks` and wait until every one has ended. What they returned or raised stays on them
    (`result()`, `exception()`, `cancelled()`) for the caller to read; nothing is raised here.

    `shielded`: wait for them even if the caller is cancelled meanwhile (their clean-up, such as
    aborting vLLM requests, always completes)."""
    ending = list(tasks)
    for task in ending:
        task.cancel()
    if not shielded:
        await asyncio.gather(*ending, return_exceptions=True)
        return
    with anyio.CancelScope(shield=True):
        await asyncio.gather(*ending, return_exceptions=True)
