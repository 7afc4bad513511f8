"""One global budget of backend requests for file work, shared round-robin between file jobs.

Every chunk of a file transcription takes a place in the budget (`MAX_FILE_BACKEND_REQUESTS`)
for as long as its vLLM request runs. When places are short, the waiting jobs (one per HTTP
request or RunPod job) take turns: each free place goes to the waiting job served least recently
(a new job first), not to the oldest waiting chunk, so a 10-second clip gets the next free place
instead of waiting for all the chunks of a 2-hour file. With `RESERVE_FROM` places or more, the
last free place is kept for a job with nothing in flight: a short clip then starts at once even
while long files fill the rest, instead of waiting for one of their chunks to end.

Realtime turns never come here: they call `VLLMClient` directly and so always find vLLM's batch
with few file requests in it.
"""

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
    """At most `capacity` file requests in flight to vLLM, handed out round-robin between jobs."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the file budget needs at least one place")
        self.capacity = capacity
        self.reserve = 1 if capacity >= RESERVE_FROM else 0
        self.in_flight = 0
        self._turns = 0
        # Jobs with chunks waiting (in arrival order, for ties), each with its waiters in order.
        self._waiting: dict[FileJob, deque[asyncio.Future[None]]] = {}

    def job(self) -> FileJob:
        return FileJob(self)

    @property
    def waiting(self) -> int:
        return sum(len(waiters) for waiters in self._waiting.values())

    async def _acquire(self, job: FileJob) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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

    def _may_take(self, job: FileJob) -> bool:
        return self.capacity - self.in_flight > self.reserve or (job.in_flight == 0 and self.in_flight < self.capacity)

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
        while eligible := [job for job in self._waiting if self._may_take(job)]:
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
