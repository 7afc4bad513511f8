"""The file budget on its own: a bound on places, turns taken round-robin, cancellation, and the
smaller budget while live sessions are open."""

import asyncio

import pytest

from server.core.live_load import LiveLoad
from server.files.file_scheduler import FileBackendBudget, FileJob


class Recorder:
    """Runs chunks that hold their place until released one by one, recording who got a place."""

    def __init__(self, budget: FileBackendBudget) -> None:
        self.budget = budget
        self.started: list[str] = []
        self.peak = 0
        self._done: dict[str, asyncio.Event] = {}

    async def chunk(self, job: FileJob, name: str) -> None:
        async with job.slot():
            self.started.append(name)
            self.peak = max(self.peak, self.budget.in_flight)
            self._done[name] = asyncio.Event()
            await self._done[name].wait()

    async def finish(self, name: str) -> None:
        self._done[name].set()
        await settle()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_never_more_places_than_the_budget() -> None:
    budget = FileBackendBudget(3)
    recorder = Recorder(budget)
    jobs = [budget.job() for _ in range(4)]
    tasks = [asyncio.create_task(recorder.chunk(job, f"{j}.{c}")) for j, job in enumerate(jobs) for c in range(5)]
    await settle()
    while len(recorder.started) < len(tasks):
        assert budget.in_flight == 3
        await recorder.finish(recorder.started[-1])
    for name in recorder.started:
        await recorder.finish(name)
    await asyncio.gather(*tasks)
    assert recorder.peak == 3
    assert budget.in_flight == 0 and budget.waiting == 0


async def test_jobs_take_turns() -> None:
    """A long job queued first and a second job behind it: places alternate between them, the
    newcomer first."""
    budget = FileBackendBudget(1)
    recorder = Recorder(budget)
    long_job, other = budget.job(), budget.job()
    tasks = [asyncio.create_task(recorder.chunk(long_job, f"long{i}")) for i in range(6)]
    await settle()
    tasks += [asyncio.create_task(recorder.chunk(other, f"other{i}")) for i in range(3)]
    await settle()
    while len(recorder.started) < len(tasks):
        await recorder.finish(recorder.started[-1])
    await recorder.finish(recorder.started[-1])
    await asyncio.gather(*tasks)
    assert recorder.started == ["long0", "other0", "long1", "other1", "long2", "other2", "long3", "long4", "long5"]


async def test_a_short_job_waits_for_one_chunk_not_the_whole_file() -> None:
    budget = FileBackendBudget(2)
    recorder = Recorder(budget)
    long_job, short_job = budget.job(), budget.job()
    tasks = [asyncio.create_task(recorder.chunk(long_job, f"long{i}")) for i in range(20)]
    await settle()
    short = asyncio.create_task(recorder.chunk(short_job, "short"))
    await settle()
    await recorder.finish("long0")
    assert recorder.started == ["long0", "long1", "short"]
    for name in ["short", *(f"long{i}" for i in range(1, 20))]:
        while name not in recorder.started:
            await recorder.finish(recorder.started[-1])
        await recorder.finish(name)
    await asyncio.gather(*tasks, short)


async def test_a_cancelled_job_leaves_the_queue_and_frees_its_places() -> None:
    budget = FileBackendBudget(2)
    recorder = Recorder(budget)
    gone, staying = budget.job(), budget.job()
    gone_tasks = [asyncio.create_task(recorder.chunk(gone, f"gone{i}")) for i in range(10)]
    await settle()
    staying_task = asyncio.create_task(recorder.chunk(staying, "staying"))
    await settle()
    assert budget.in_flight == 2 and budget.waiting == 9
    for task in gone_tasks:
        task.cancel()
    await asyncio.gather(*gone_tasks, return_exceptions=True)
    await settle()
    assert recorder.started[-1] == "staying"
    assert budget.in_flight == 1 and budget.waiting == 0
    await recorder.finish("staying")
    await staying_task
    assert budget.in_flight == 0


async def test_a_place_granted_to_a_cancelled_chunk_is_passed_on() -> None:
    budget = FileBackendBudget(1)
    recorder = Recorder(budget)
    job_a, job_b = budget.job(), budget.job()
    held = job_a.slot()
    await held.__aenter__()
    granted_then_cancelled = asyncio.create_task(recorder.chunk(job_b, "b0"))
    await settle()
    waiting = asyncio.create_task(recorder.chunk(job_a, "a1"))
    await settle()
    await held.__aexit__(None, None, None)  # the place goes to b0, which is cancelled before it runs
    granted_then_cancelled.cancel()
    await asyncio.gather(granted_then_cancelled, return_exceptions=True)
    await settle()
    assert recorder.started == ["a1"]
    await recorder.finish("a1")
    await waiting
    assert budget.in_flight == 0 and budget.waiting == 0


def test_the_budget_needs_a_place() -> None:
    with pytest.raises(ValueError):
        FileBackendBudget(0)


async def test_the_last_place_is_kept_for_a_job_with_nothing_in_flight() -> None:
    budget = FileBackendBudget(4)
    recorder = Recorder(budget)
    long_job, other_long, short_job = budget.job(), budget.job(), budget.job()
    tasks = [asyncio.create_task(recorder.chunk(long_job, f"long{i}")) for i in range(10)]
    tasks += [asyncio.create_task(recorder.chunk(other_long, f"other{i}")) for i in range(10)]
    await settle()
    assert recorder.started == ["long0", "long1", "long2", "other0"]  # the newcomer took the last place
    await recorder.finish("long0")
    assert budget.in_flight == 3  # both jobs have chunks running: the last place stays free
    short = asyncio.create_task(recorder.chunk(short_job, "short"))
    await settle()
    assert recorder.started[-1] == "short" and budget.in_flight == 4
    await recorder.finish("short")
    await short
    while len(recorder.started) < len(tasks) + 1:
        await recorder.finish(next(n for n in recorder.started if not recorder._done[n].is_set()))
    for name in recorder.started:
        await recorder.finish(name)
    await asyncio.gather(*tasks)
    assert recorder.peak == 4 and budget.in_flight == 0


async def test_live_sessions_shrink_the_file_share_and_their_end_restores_it() -> None:
    """With a session open, chunks in flight run on but none starts until the file requests are
    under the live budget; when the last session closes the waiting chunks take the full budget
    at once, before any chunk ends."""
    live = LiveLoad()
    budget = FileBackendBudget(3, live_capacity=1, live=live)
    recorder = Recorder(budget)
    job = budget.job()
    tasks = [asyncio.create_task(recorder.chunk(job, f"c{i}")) for i in range(12)]
    await settle()
    assert budget.in_flight == 3
    with live.session(), live.session():
        assert budget.capacity == 1
        await recorder.finish("c0")
        await recorder.finish("c1")
        assert recorder.started == ["c0", "c1", "c2"] and budget.in_flight == 1  # nothing new started
        await recorder.finish("c2")
        assert recorder.started[-1] == "c3" and budget.in_flight == 1  # one file request beside live work
        await recorder.finish("c3")
        assert recorder.started[-1] == "c4" and budget.in_flight == 1
    assert budget.capacity == 3
    await settle()
    assert recorder.started == [f"c{i}" for i in range(7)] and budget.in_flight == 3
    for name in [f"c{i}" for i in range(4, 12)]:
        await recorder.finish(name)
    await asyncio.gather(*tasks)
    assert budget.in_flight == 0 and budget.waiting == 0


def test_the_live_budget_needs_a_place_and_is_at_most_the_budget() -> None:
    with pytest.raises(ValueError):
        FileBackendBudget(4, live_capacity=0)
    assert FileBackendBudget(2, live_capacity=8).live_capacity == 2
