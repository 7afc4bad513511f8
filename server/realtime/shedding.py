"""Shedding lagging realtime sessions one at a time, so that the edge keeps as many as it can serve.

When an edge process is overloaded its sessions fall behind together: each passes its lag bound
(`REALTIME_MAX_LAG_S`) within a moment of the others, and were each shed as it passed, most would go
at once, although shedding a few would have let the rest catch up. So the sessions of a process
share one `LagShedder`: a session past its bound says so, and of all the sessions then past their
bound the newest is shed (whichever said so); then none for `REALTIME_SHED_INTERVAL_S`, the time the
others get to catch up with the room it left; then, if some still lag, the newest of them, and so
on. (A session whose backlog passes `REALTIME_MAX_BACKLOG_MB` is shed at once all the same: that
bound is memory's.)
"""

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("edge.realtime")


class Watch:
    """One session as its process's shedder sees it: its age rank, how far behind it is now, and
    the event set when it is the one to shed."""

    def __init__(self, order: int, lag_s: Callable[[], float], max_lag_s: float) -> None:
        self.order = order
        self.lag_s = lag_s
        self.max_lag_s = max_lag_s
        self.shed = asyncio.Event()

    @property
    def lagging(self) -> bool:
        return self.lag_s() > self.max_lag_s


class LagShedder:
    """The sessions of one process, and when the next lagging one may be shed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._orders = itertools.count()
        self._watches: dict[int, Watch] = {}
        self._next_at = float("-inf")

    @contextmanager
    def watching(self, lag_s: Callable[[], float], max_lag_s: float) -> Iterator[Watch]:
        """A session's watch while the block runs: `lag_s()` says how far behind it is."""
        watch = Watch(next(self._orders), lag_s, max_lag_s)
        self._watches[watch.order] = watch
        try:
            yield watch
        finally:
            del self._watches[watch.order]

    def report(self, interval_s: float) -> None:
        """A session is past its lag bound: unless one was shed in the last `interval_s`, the newest
        of the sessions past their bound now is told to go (this one or another)."""
        now = self._clock()
        if now < self._next_at:
            return
        lagging = [watch for watch in self._watches.values() if not watch.shed.is_set() and watch.lagging]
        if not lagging:
            return
        newest = max(lagging, key=lambda watch: watch.order)
        newest.shed.set()
        self._next_at = now + interval_s
        log.warning(
            "shedding the newest of %d lagging realtime sessions (of %d); the next one %g s from now at the earliest",
            len(lagging),
            len(self._watches),
            interval_s,
        )
