"""The worker threads that decode files and run VAD over them, bounded and at a low OS priority.

A long file's decoding and VAD are seconds of CPU. Run in the event loop's default executor they
compete as equals with vLLM's engine and the edge's own loop for the cores, and live turns wait
for both. Here at most `FILE_PREP_THREADS` files are prepared at once (the rest queue), and each
thread runs at nice `PREP_NICE`, so on a busy machine the scheduler gives the cores to vLLM and
the live sessions first and the files their decoding in what is left. Linux applies a nice value
per thread; elsewhere the threads keep the process's priority.
"""

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

log = logging.getLogger("edge.audio")

PREP_NICE = 10

P = ParamSpec("P")
T = TypeVar("T")


def _lower_priority() -> None:
    """Run the calling thread at nice `PREP_NICE` (never raising its priority)."""
    if not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), PREP_NICE))
    except OSError as exc:
        log.warning("file preparation threads keep the edge's priority (%s)", exc)


class FilePrep:
    """A pool of `threads` low-priority threads for the CPU-bound steps of file work (its idle
    threads end when the pool is collected with its service)."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="file-prep", initializer=_lower_priority)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
