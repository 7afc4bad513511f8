"""One global budget of backend requests for file work, shared round-robin between file jobs.

Every chunk of a file transcription takes a place in the budget (`MAX_FILE_BACKEND_REQUESTS`)
for as long as its vLLM request runs. When places are short, the waiting jobs (one per HTTP
request or RunPod job) take turns: each free place goes to the waiting job served least recently
(a new job first), not to the oldest waiting chunk, so a 10-second clip gets the next free place
instead of waiting for all the chunks of a 2-hour file. With `RESERVE_FROM` places or more, the
last free place is kept for a job with nothing in flight: a short clip then starts at once even
while long files fill the rest, instead of waiting for one of their chunks to end.

While realtime sessions are open in the edge process (`server.core.live_load`), the budget
shrinks to `live_capacity` (`MAX_FILE_BACKEND_REQUESTS_LIVE`): chunks in flight beyond it run to
their end, and no new one starts until the file requests are under it. When the last session
closes, the waiting chunks get the full budget again at once. On a CPU, every file chunk in vLLM's
batch lengthens the engine steps the live turns wait for ("Live first at the defaults" in
benchmarks/README.md).

Realtime turns never come here: they call `VLLMClient` directly and so find vLLM's batch with
at most `live_capacity` file requests in it.
"""

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from server.core.live_load import LIVE_LOAD, LiveLoad
from server.core.metrics import FILE_BACKEND_IN_FLIGHT, FILE_BACKEND_WAITING

RESERVE_FROM = 4


class FileJob:
    """One request's share of the budget; `slot()` holds one place while a chunk runs."""

    def __init__(self, budget: "FileBackendBudget") -> None:
        self._budget = budget
        self.in_flight = 0
        self.last_turn = 0
        """When the job last got a place (the budget's turn counter); 0 = never."""

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self._budget._acquire(self)
        try:
            yield
        finally:
            self._budget._release(self)


class FileBackendBudget:
    """At most `capacity` file requests in flight to vLLM (`live_capacity` while `live` has sessions
    open), handed out round-robin between jobs."""

    def __init__(self, capacity: int, live_capacity: int | None = None, live: LiveLoad = LIVE_LOAD) -> None:
        if capacity < 1 or (live_capacity is not None and live_capacity < 1):
            raise ValueError("the file budget needs at least one place")
        self.full_capacity = capacity
        self.live_capacity = min(capacity, live_capacity) if live_capacity is not None else capacity
        self.live = live
        self.in_flight = 0
        self._turns = 0
        # Jobs with chunks waiting (in arrival order, for ties), each with its waiters in order.
        self._waiting: dict[FileJob, deque[asyncio.Future[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        live.on_idle(self._grow_back)

    @property
    def capacity(self) -> int:
        """The places now: the full budget, or the live one while sessions are open."""
        return self.live_capacity if self.live.active else self.full_capacity

    @property
    def reserve(self) -> int:
        return 1 if self.capacity >= RESERVE_FROM else 0

    def job(self) -> FileJob:
        return FileJob(self)

    @property
    def waiting(self) -> int:
        return sum(len(waiters) for waiters in self._waiting.values())

    async def _acquire(self, job: FileJob) -> None:
        self._loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiting.setdefault(job, deque()).append(future)
        FILE_BACKEND_WAITING.inc()
        self._grant()
        try:
            await future
        except asyncio.CancelledError:
            if future.cancelled():
                # Cancelled while waiting (the client went away): leave the queue at once.
                self._forget(job, future)
            else:
                # Granted, then cancelled before it could run: pass the place on.
                self._release(job)
            raise

    def _forget(self, job: FileJob, future: asyncio.Future[None]) -> None:
        waiters = self._waiting.get(job)
        if waiters is None or future not in waiters:
            return
        waiters.remove(future)
        FILE_BACKEND_WAITING.dec()
        if not waiters:
            del self._waiting[job]

    def _may_take(self, job: FileJob, capacity: int, reserve: int) -> bool:
        return capacity - self.in_flight > reserve or (job.in_flight == 0 and self.in_flight < capacity)

    def _grow_back(self) -> None:
        """The last live session closed (on whichever loop it ran): give out the full budget now."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._grant)

    def _take(self, job: FileJob) -> None:
        self._turns += 1
        job.last_turn = self._turns
        job.in_flight += 1
        self.in_flight += 1
        FILE_BACKEND_IN_FLIGHT.inc()

    def _release(self, job: FileJob) -> None:
        job.in_flight -= 1
        self.in_flight -= 1
        FILE_BACKEND_IN_FLIGHT.dec()
        self._grant()

    def _grant(self) -> None:
        """Give free places to the waiting jobs in turn, the one served least recently first."""
        capacity, reserve = self.capacity, self.reserve
        while eligible := [job for job in self._waiting if self._may_take(job, capacity, reserve)]:
            job = min(eligible, key=lambda waiting_job: waiting_job.last_turn)
            waiters = self._waiting[job]
            future = waiters.popleft()
            FILE_BACKEND_WAITING.dec()
            if not waiters:
                del self._waiting[job]
            if future.cancelled():
                continue  # its task is being cancelled and has not yet left the queue itself
            self._take(job)
            future.set_result(None)
