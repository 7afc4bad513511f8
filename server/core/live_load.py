"""How much live (realtime) work this edge process has open now, so that file work makes way for it.

Realtime sessions are counted from admission to close (`server.realtime.admission`); the file
budget (`server.files.file_scheduler`) reads the count whenever it hands out a place, and is told
when the last session closes so that it grows back at once rather than at its next chunk's end.
The count is per edge process: with `WORKERS` > 1, each worker's files make way for its own
sessions.
"""

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class LiveLoad:
    """Open realtime sessions, and who to tell when there are none left."""

    def __init__(self) -> None:
        self.sessions = 0
        self._on_idle: list[weakref.WeakMethod[Callable[[], None]]] = []

    @property
    def active(self) -> bool:
        return self.sessions > 0

    @contextmanager
    def session(self) -> Iterator[None]:
        """Count one open session while the block runs."""
        self.sessions += 1
        try:
            yield
        finally:
            self.sessions -= 1
            if self.sessions == 0:
                self._idle()

    def on_idle(self, callback: Callable[[], None]) -> None:
        """Call the bound method `callback` whenever the last session closes; it is held weakly,
        so an object that subscribes is not kept alive by this process-wide count."""
        self._on_idle.append(weakref.WeakMethod(callback))

    def _idle(self) -> None:
        alive = []
        for ref in self._on_idle:
            if (callback := ref()) is not None:
                alive.append(ref)
                callback()
        self._on_idle = alive


LIVE_LOAD = LiveLoad()
"""This process's live load: what admission counts and the file budget reads."""
