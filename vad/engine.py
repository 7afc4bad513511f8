"""Batched VAD for many concurrent streams: one onnxruntime call per tick.

Batching policy. Each stream owns a slot holding its recurrent state
(``[2, slots, 128]`` array); its 64-sample context lives in its own framer.
``EngineStream.feed`` frames the new samples and queues them; a single tick
task on the event loop repeatedly takes the oldest pending frame of up to
``max_batch`` streams that have work (round robin), gathers their states,
runs one batched model call in a dedicated worker thread (onnxruntime
releases the GIL, so the event loop keeps serving requests), writes the new
states back and resolves the feeds whose frames are all done.

A tick starts as soon as the previous one ends, with whatever frames arrived
meanwhile, until no stream has work left. With ``batch_window_s`` (the
realtime sessions' ``REALTIME_VAD_BATCH_MS``), the first tick after idle waits
that long first, so the frames of streams appending at different moments meet
in one call: live sessions append every 20-100 ms at random phases, and
without a window most calls carry one or two rows, at a higher model cost per
row than a full batch. The window adds at most its length to when a turn's
start or end is heard, and since a stream's frames are fed in order, a lone
stream advances about one tick per window. Without it a frame waits at most
for the tick in progress plus its own, and none when idle. A tick's cost grows
with its rows, and ``max_batch`` bounds it (tick costs per batch size:
benchmarks/README.md, "VAD"). Ticks of at most ``inline_rows`` rows run
directly on the loop, because for so few rows the thread hand-off costs more
than the inference. A stream fed k frames at once needs k ticks, since its
frames depend on each other through the state.

Results equal :class:`~vad.streaming.StreamingDetector` on the same input
(batch rows are independent, up to float rounding).
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np

from vad.framing import Framer
from vad.model import STATE_SIZE, SileroModel
from vad.streaming import Event, StreamParams, TurnTracker


class _Job:
    """Frames queued by one ``feed`` call."""

    __slots__ = ("done", "future", "inputs", "probs")

    def __init__(self, inputs: np.ndarray, future: asyncio.Future) -> None:
        self.inputs = inputs
        self.probs = np.empty(len(inputs), dtype=np.float32)
        self.done = 0
        self.future = future


class EngineStream:
    """One session's view of the engine. Use from the engine's event loop only."""

    def __init__(self, engine: BatchedVADEngine, slot: int, params: StreamParams) -> None:
        self._engine = engine
        self.slot = slot
        self._framer = Framer()
        self._tracker = TurnTracker(params)
        self._jobs: deque[_Job] = deque()
        self._lock = asyncio.Lock()
        self.generation = 0  # bumped by reset/close so in-flight results are discarded
        self.closed = False

    async def feed(self, samples: np.ndarray) -> list[Event]:
        """Feed 16 kHz float32 samples (any count); return the events they complete.

        Returns [] if the stream is reset or closed while the frames are queued.
        """
        if self.closed:
            raise RuntimeError("stream is closed")
        async with self._lock:
            generation = self.generation
            inputs = self._framer.push(samples)
            if len(inputs) == 0:
                return []
            probs = await self._engine._submit(self, inputs)
            if probs is None or generation != self.generation:
                return []
            return self._tracker.step(probs.tolist())

    def flush(self) -> list[Event]:
        """End of stream: close an open turn at the last sample fed, then start afresh."""
        events = self._tracker.finish(self._framer.samples_seen)
        self.reset()
        return events

    def reset(self) -> None:
        self._framer.reset()
        self._tracker.reset()
        self._drop_jobs()
        self._engine._reset_slot(self)

    def close(self) -> None:
        """Leave the engine; frees the slot."""
        if self.closed:
            return
        self.closed = True
        self._drop_jobs()
        self._engine._release(self)

    def _drop_jobs(self) -> None:
        self.generation += 1
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_result(None)
        self._engine._ready.pop(self, None)

    def _fail(self, exc: Exception) -> None:
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(exc)
        self._engine._ready.pop(self, None)

    def _next_input(self) -> np.ndarray:
        job = self._jobs[0]
        return job.inputs[job.done]

    def _deliver(self, prob: float) -> bool:
        """Record the probability of the frame given by ``_next_input``; True if more are pending."""
        job = self._jobs[0]
        job.probs[job.done] = prob
        job.done += 1
        if job.done == len(job.inputs):
            self._jobs.popleft()
            if not job.future.done():
                job.future.set_result(job.probs)
        return bool(self._jobs)


class BatchedVADEngine:
    """Steps all open streams together; see the module docstring for the batching policy."""

    def __init__(
        self,
        model: SileroModel | None = None,
        *,
        max_batch: int = 1024,
        intra_op_threads: int = 1,
        initial_slots: int = 64,
        inline_rows: int = 4,
        batch_window_s: float = 0.0,
    ) -> None:
        self._model = model or SileroModel(intra_op_threads=intra_op_threads)
        self._max_batch = max_batch
        self._inline_rows = inline_rows
        self._batch_window_s = batch_window_s
        self._state = SileroModel.initial_state(initial_slots)
        self._free = list(range(initial_slots - 1, -1, -1))
        self._ready: dict[EngineStream, None] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def open_streams(self) -> int:
        return self._state.shape[1] - len(self._free)

    async def start(self) -> None:
        if self._task is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad-engine")
            self._task = asyncio.create_task(self._run(), name="vad-engine")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._executor = None
        for stream in list(self._ready):
            stream._drop_jobs()

    async def __aenter__(self) -> BatchedVADEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def open_stream(self, params: StreamParams | None = None) -> EngineStream:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._state[:, slot] = 0.0
        return EngineStream(self, slot, params or StreamParams())

    def _grow(self) -> None:
        old = self._state.shape[1]
        state = np.zeros((2, old * 2, STATE_SIZE), dtype=np.float32)
        state[:, :old] = self._state
        self._state = state
        self._free.extend(range(old * 2 - 1, old - 1, -1))

    def _release(self, stream: EngineStream) -> None:
        self._free.append(stream.slot)

    def _reset_slot(self, stream: EngineStream) -> None:
        self._state[:, stream.slot] = 0.0

    def _submit(self, stream: EngineStream, inputs: np.ndarray) -> asyncio.Future:
        if self._task is None:
            raise RuntimeError("engine is not started")
        future = asyncio.get_running_loop().create_future()
        stream._jobs.append(_Job(inputs, future))
        self._ready.setdefault(stream, None)
        self._wake.set()
        return future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if self._batch_window_s:
                await asyncio.sleep(self._batch_window_s)
            self._wake.clear()
            while self._ready:
                streams = list(islice(self._ready, self._max_batch))
                generations = [s.generation for s in streams]
                rows = [s._next_input() for s in streams]
                slots = np.fromiter((s.slot for s in streams), dtype=np.intp, count=len(streams))
                state = self._state[:, slots]
                try:
                    if len(rows) <= self._inline_rows:
                        probs, new_state = self._infer(rows, state)
                        await asyncio.sleep(0)  # yield between inline ticks
                    else:
                        probs, new_state = await loop.run_in_executor(self._executor, self._infer, rows, state)
                except Exception as exc:  # fail the waiting feeds, keep serving others
                    for stream, generation in zip(streams, generations, strict=False):
                        if stream.generation == generation:
                            stream._fail(exc)
                    continue
                for i, stream in enumerate(streams):
                    if stream.generation != generations[i]:
                        continue  # reset or closed meanwhile; its slot may belong to someone else
                    self._state[:, stream.slot] = new_state[:, i]
                    del self._ready[stream]
                    if stream._deliver(float(probs[i])):
                        self._ready[stream] = None  # back of the queue: round robin

    def _infer(self, rows: list[np.ndarray], state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._model.run(np.stack(rows), state)
