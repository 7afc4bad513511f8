"""A continuous, lossless stream of audio segments through vLLM's `/v1/realtime`.

Each segment (one conversation item) is one or more vLLM generations in turn on one WebSocket:

- A segment's end sends `commit final`; the next segment's generation starts after vLLM's
  `transcription.done`. vLLM drops audio appended between `final` and `done`, so audio arriving
  meanwhile waits here and goes to the next generation.
- A generation stops by itself at vLLM's `max_model_len` (its prompt, then one token per 80 ms
  step), dropping any audio still queued. So a generation is ended (`final`) after
  `steps_per_generation` steps of audio and the segment goes on in a new one; the audio after the
  cut waits here for it. A restart loses the text context of the earlier generation, not audio.
- Should vLLM stop a generation first anyway (its `max_model_len` is smaller than reported), the
  audio from the last step it wrote text for (`spoken_span`) on is sent again, from the last
  `RESEND_S` of audio kept, to a new generation on a new connection (vLLM keeps appends that reach
  it after its `done` for the next generation of the same connection).

Positions are 16 kHz sample counts on the caller's clock. Delta `k` of a generation (0-based) was
computed from the audio up to `heard_end(k)`; see `heard_end`.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from server.backend.vllm_realtime.connection import RealtimeConnection
from server.backend.vllm_realtime.errors import RealtimeBackendError
from server.backend.vllm_realtime.protocol import STEP_SAMPLES, Append, Commit, Delta, Done
from server.core.audio import SAMPLE_RATE

log = logging.getLogger("edge.vllm_realtime")

# Steps of prompt and padding around a generation's audio: BOS, 32 left-padding tokens and the
# delay tokens (6 at 480 ms) in the prompt, then the right padding (17 steps) that flushes the
# text of the last audio. A margin keeps the cut well before vLLM's own stop.
GENERATION_OVERHEAD_STEPS = 64
# The model writes a word this many steps after hearing it: 480 ms in the published tokenizer
# (and the tiny one); vLLM takes it from the served model's tekken.json.
DELAY_STEPS = 6
# Steps of real audio the first step of a generation has heard: BOS plus the delay tokens
# (the left padding is silence of exactly its token count).
FIRST_STEP_AUDIO_STEPS = 1 + DELAY_STEPS
# Most audio sent in one append.
MAX_APPEND_SAMPLES = 16000
# Audio of the running generation kept to send again if vLLM stops it early.
RESEND_S = 30


def steps_per_generation(max_model_len: int) -> int:
    """80 ms steps of audio one generation takes before the stream restarts it."""
    return max(max_model_len - GENERATION_OVERHEAD_STEPS, 16)


def heard_end(start: int, step: int) -> int:
    """The position up to which delta `step` of a generation whose audio began at `start` heard audio.

    With a delay of D steps the model writes a word D steps after hearing it: see `spoken_span`.
    """
    return start + (FIRST_STEP_AUDIO_STEPS + step) * STEP_SAMPLES


def spoken_span(heard_until: int) -> tuple[int, int]:
    """The 80 ms of audio the text of a step stands for: the step heard up to `heard_until`, less the delay."""
    end = heard_until - DELAY_STEPS * STEP_SAMPLES
    return end - STEP_SAMPLES, end


class _GenerationCut(Exception):
    """vLLM ended a generation before its audio did: start over on a fresh connection."""


@dataclass(frozen=True)
class StreamDelta:
    """One `transcription.delta` (one 80 ms step; the text is often empty)."""

    key: str
    text: str
    step: int
    generation_start: int
    heard_until: int


@dataclass(frozen=True)
class SegmentDone:
    """A segment's whole text, once all its generations are done."""

    key: str
    text: str
    start: int
    end: int
    generations: int
    steps: int


@dataclass(eq=False)
class _Segment:
    key: str
    position: int
    start: int
    chunks: deque[np.ndarray] = field(default_factory=deque)
    ended: bool = False
    texts: list[str] = field(default_factory=list)
    generations: int = 0
    steps: int = 0

    def give_back(self, audio: np.ndarray, position: int) -> None:
        """Put audio that vLLM dropped back in front of the waiting audio, from `position`."""
        if len(audio):
            self.chunks.appendleft(audio)
        self.position = position

    def take(self, limit: int) -> np.ndarray:
        """Up to `limit` samples of the waiting audio, from the front."""
        parts: list[np.ndarray] = []
        size = 0
        while self.chunks and size < limit:
            chunk = self.chunks.popleft()
            if size + len(chunk) > limit:
                self.chunks.appendleft(chunk[limit - size :])
                chunk = chunk[: limit - size]
            parts.append(chunk)
            size += len(chunk)
        self.position += size
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


class RealtimeStream:
    """Feeds segments of 16 kHz audio to one `/v1/realtime` connection, one generation at a time.

    Call from the event loop: `start_segment`, `feed`, `end_segment` never block. Results go to
    the callbacks, which must not block either: `on_delta` per step, `on_done` per segment, and
    `on_error` once if the stream fails (then nothing more is sent; `aclose()` still must be called).
    """

    def __init__(
        self,
        backend_url: str,
        model: str,
        *,
        max_model_len: int,
        on_delta: Callable[[StreamDelta], None],
        on_done: Callable[[SegmentDone], None],
        on_error: Callable[[RealtimeBackendError], None],
        api_key: str | None = None,
    ) -> None:
        self._url = backend_url
        self._model = model
        self._api_key = api_key
        self._budget = steps_per_generation(max_model_len) * STEP_SAMPLES
        self._on_delta = on_delta
        self._on_done = on_done
        self._on_error = on_error
        self._segments: deque[_Segment] = deque()
        self._wake = asyncio.Event()
        self._generation: tuple[_Segment, int, asyncio.Future[Done]] | None = None
        self._step = 0
        self.failed: RealtimeBackendError | None = None
        self._task = asyncio.create_task(self._run())

    def start_segment(self, key: str, position: int) -> None:
        """Begin a segment whose first audio (fed next) is at `position`; ends any open one."""
        self.end_segment()
        self._segments.append(_Segment(key, position, position))
        self._wake.set()

    def feed(self, samples: np.ndarray) -> None:
        """Audio for the open segment (float32, 16 kHz mono)."""
        if self._segments and not self._segments[-1].ended and len(samples) and self.failed is None:
            self._segments[-1].chunks.append(samples)
            self._wake.set()

    def end_segment(self) -> None:
        """The open segment's audio is complete; its text comes to `on_done`."""
        if self._segments and not self._segments[-1].ended:
            self._segments[-1].ended = True
            self._wake.set()

    async def aclose(self) -> None:
        """Stop at once: segments in flight get no more events."""
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        reconnect = True
        while reconnect:
            reconnect = False
            try:
                connection = await RealtimeConnection.open(self._url, self._model, api_key=self._api_key)
            except RealtimeBackendError as exc:
                self._fail(exc)
                return
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._read(connection))
                    group.create_task(self._send(connection))
            except* _GenerationCut:
                reconnect = True
            except* RealtimeBackendError as failures:
                self._fail(failures.exceptions[0])  # type: ignore[arg-type]
            except* Exception as failures:
                log.error("realtime stream to vLLM crashed", exc_info=failures.exceptions[0])
                self._fail(RealtimeBackendError(f"realtime stream crashed: {failures.exceptions[0]!r}"))
            finally:
                await connection.aclose()

    def _fail(self, exc: RealtimeBackendError) -> None:
        if self.failed is not None:
            return
        log.warning("realtime stream to vLLM failed: %s", exc)
        self.failed = exc
        self._on_error(exc)

    async def _next_segment(self) -> _Segment:
        while not self._segments:
            self._wake.clear()
            await self._wake.wait()
        return self._segments[0]

    async def _send(self, connection: RealtimeConnection) -> None:
        while True:
            segment = await self._next_segment()
            while True:
                if not await self._generate(connection, segment):
                    break
            self._segments.popleft()
            self._on_done(
                SegmentDone(
                    key=segment.key,
                    text="".join(segment.texts),
                    start=segment.start,
                    end=segment.position,
                    generations=segment.generations,
                    steps=segment.steps,
                )
            )

    async def _generate(self, connection: RealtimeConnection, segment: _Segment) -> bool:
        """Run one generation of `segment`; True if the segment goes on in another one."""
        while not segment.chunks and not segment.ended:
            self._wake.clear()
            await self._wake.wait()
        if not segment.chunks:
            return False  # ended with no audio left: no generation needed
        done: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        done.add_done_callback(lambda _: self._wake.set())
        self._generation = (segment, segment.position, done)
        self._step = 0
        segment.generations += 1
        await connection.send(Commit())
        start = segment.position
        kept: deque[np.ndarray] = deque()
        sent = 0
        while sent < self._budget and not done.done():
            if segment.chunks:
                audio = segment.take(min(MAX_APPEND_SAMPLES, self._budget - sent))
                await connection.send(Append.from_samples(audio))
                sent += len(audio)
                kept.append(audio)
                while sum(len(a) for a in kept) - len(kept[0]) >= RESEND_S * SAMPLE_RATE:
                    kept.popleft()
            elif segment.ended:
                break
            else:
                self._wake.clear()
                await self._wake.wait()
        if not done.done():
            await connection.send(Commit(final=True))
        result = await done
        segment.texts.append(result.text)
        written_to = spoken_span(heard_end(start, self._step - 1))[1] if self._step else start
        if written_to < segment.position:
            # vLLM stopped the generation before writing the text of all the audio sent. What it
            # got after its `done` waits in its queue for the next generation of this connection,
            # so the segment goes on over a new one.
            self._resend_unwritten(segment, written_to, kept)
            raise _GenerationCut
        return bool(segment.chunks) or not segment.ended

    def _resend_unwritten(self, segment: _Segment, resume: int, kept: deque[np.ndarray]) -> None:
        """Give the audio from `resume` (after the last step vLLM wrote text for) back to the segment."""
        kept_from = segment.position - sum(len(a) for a in kept)
        audio = np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)
        if resume < kept_from:
            log.warning("vLLM ended a realtime generation early; %d samples are lost", kept_from - resume)
            resume = kept_from
        log.warning("vLLM ended a realtime generation early after %d steps; resending from %d", self._step, resume)
        segment.give_back(audio[resume - kept_from :], min(resume, segment.position))

    async def _read(self, connection: RealtimeConnection) -> None:
        while True:
            event = await connection.receive()
            if self._generation is None:
                continue
            segment, start, done = self._generation
            if isinstance(event, Delta):
                self._on_delta(StreamDelta(segment.key, event.delta, self._step, start, heard_end(start, self._step)))
                self._step += 1
                segment.steps += 1
            elif isinstance(event, Done):
                self._generation = None
                done.set_result(event)
