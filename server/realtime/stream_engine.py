"""The streaming transcription engine of a realtime session (Voxtral Realtime through vLLM).

The session feeds it all of its 16 kHz audio (`append`) and the item boundaries it decides (server
VAD's speech start and stop, or the client's commits); the engine streams each item's audio to
vLLM's `/v1/realtime` as it arrives and emits, for that item, a `TranscriptDelta` per piece of text
while the person speaks and a `TranscriptCompleted` with the item's whole text after its end.

An item's final goes out as soon as vLLM has written its text: once the steps vLLM has computed
reach the item's end and `margin_ms` past its speech end (Voxtral Realtime writes a word from its
start plus the model's delay, so a word's text is due about the delay after it ends, a little later
for words of more tokens than 80 ms steps). vLLM's right padding (17 steps) then runs on without
the client waiting for it; text it still writes for the item is dropped, logged and counted in
`edge_realtime_stream_late_text_total`, the sign that the margin is too small for the model.

Audio outside items is kept for `LOOKBACK_S` only, so an item may start a little in the past
(VAD's prefix padding). An item ends where the session says, or where its audio was already
streamed if that is later (VAD stops after some silence that has been sent by then); the next
item starts no earlier, so no audio is sent twice and none between items is lost.

Seam for the session (`server/realtime/session.py`), the `TranscriptionEngine` interface:
- the app keeps one `EngineSelector(settings)` (`engines.py`); a new session calls
  `await selector.select()` and, for `EngineKind.STREAM`, creates one
  `StreamEngine(backend, emit, on_error, on_turn_done=..., margin_ms=...)`;
- `append(samples)` with every decoded sample, in order (the engine counts positions itself);
- `start_item(item_id, position)` at speech start (with prefix padding), or at session start and
  after each manual commit when turn detection is off;
- `end_item(position)` at speech stop (`position` is where the speech ended) or commit;
  `discard_item()` on `input_audio_buffer.clear`;
- `await aclose()` at the end. `on_error` is called once if vLLM fails; open items get a
  `TranscriptFailed` first.
"""

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from server.backend.vllm_realtime.errors import RealtimeBackendError
from server.backend.vllm_realtime.probe import RealtimeBackend
from server.backend.vllm_realtime.protocol import STEP_SAMPLES
from server.backend.vllm_realtime.stream import (
    RealtimeStream,
    SegmentDone,
    StreamDelta,
    spoken_span,
    steps_per_generation,
)
from server.backend.vllm_realtime.words import words_from_deltas
from server.core import metrics
from server.core.audio import SAMPLE_RATE
from server.core.usage import StreamUsage
from server.realtime.audio_buffer import SAMPLES_PER_MS
from server.realtime.events import Event, TranscriptCompleted, TranscriptDelta, TranscriptFailed
from server.realtime.transcription_engine import TurnDone

LOOKBACK_S = 3.0
log = logging.getLogger("edge.realtime")


@dataclass(eq=False)
class _Item:
    item_id: str
    start: int
    opened_at: float
    end: int | None = None
    final_from: int | None = None  # the position vLLM's steps must reach for the item's final
    deltas: list[StreamDelta] = field(default_factory=list)
    steps: int = 0
    completed_at: float | None = None  # when the final went out, if before vLLM's done
    late: list[str] = field(default_factory=list)  # text vLLM wrote after that


class StreamEngine:
    """Per-item streaming transcripts of one session's audio; see the module docstring.

    An item ended by `end_item` is committed: its final event goes to `on_turn_done` too (an item
    that `start_item` ends, or a discarded one, is not).
    """

    def __init__(
        self,
        backend: RealtimeBackend,
        emit: Callable[[Event], None],
        on_error: Callable[[RealtimeBackendError], None],
        *,
        on_turn_done: TurnDone,
        margin_ms: int,
    ) -> None:
        self._emit = emit
        self._margin = margin_ms * SAMPLES_PER_MS
        self._on_error = on_error
        self._on_turn_done = on_turn_done
        self._stream = RealtimeStream(
            backend.url,
            backend.model,
            max_model_len=backend.max_model_len,
            api_key=backend.api_key,
            on_delta=self._delta,
            on_done=self._done,
            on_error=self._failed,
        )
        self._generation_samples = steps_per_generation(backend.max_model_len) * STEP_SAMPLES
        self._recent: deque[tuple[int, np.ndarray]] = deque()
        self._end = 0
        self._streamed_to = 0
        self._open: _Item | None = None
        self._items: dict[str, _Item] = {}
        self._discarded: set[str] = set()
        self._committed: set[str] = set()

    @property
    def position(self) -> int:
        """Samples appended so far."""
        return self._end

    def append(self, samples: np.ndarray) -> None:
        start, self._end = self._end, self._end + len(samples)
        if not len(samples):
            return
        if self._open is not None:
            self._stream.feed(samples)
            self._streamed_to = self._end
            return
        self._recent.append((start, samples))
        while self._recent and self._recent[0][0] + len(self._recent[0][1]) < self._end - LOOKBACK_S * SAMPLE_RATE:
            self._recent.popleft()

    def start_item(self, item_id: str, position: int) -> None:
        """Item `item_id`'s audio begins at `position` (in the past by at most `LOOKBACK_S`)."""
        self._end_open(self._end)
        start = max(position, self._streamed_to)
        item = _Item(item_id, start, time.perf_counter())
        self._open = item
        self._items[item_id] = item
        self._stream.start_segment(item_id, start)
        for chunk_start, chunk in self._recent:
            if chunk_start + len(chunk) > start:
                self._stream.feed(chunk[max(start - chunk_start, 0) :])
        self._recent.clear()
        self._streamed_to = self._end

    def pause(self, position: int) -> None:
        """Nothing to do: the item's text is streamed as it is heard."""

    def resume(self) -> None:
        """Nothing to do."""

    def end_item(self, position: int) -> None:
        """Commit the open item: its speech ends at `position`, its audio there or where it has been
        streamed to, if later."""
        if (item := self._open) is not None:
            self._committed.add(item.item_id)
            self._end_open(position)
            assert item.end is not None
            item.final_from = max(item.end, position + self._margin)

    def discard_item(self) -> None:
        """Drop the open item: its text is never emitted."""
        if self._open is not None:
            self._discarded.add(self._open.item_id)
            self._end_open(self._end)

    async def aclose(self) -> None:
        await self._stream.aclose()

    def _end_open(self, position: int) -> None:
        item = self._open
        if item is None:
            return
        self._open = None
        item.end = max(position, self._streamed_to)
        self._stream.end_segment()

    def _delta(self, delta: StreamDelta) -> None:
        item = self._items.get(delta.key)
        if item is None or delta.key in self._discarded:
            return
        item.steps += 1
        if item.completed_at is not None:
            if delta.text:
                item.late.append(delta.text)
            return
        # A generation's padding steps stand for no audio past its end.
        generation_end = delta.generation_start + self._generation_samples
        if delta.text:
            item.deltas.append(delta)
            spoken_to = min(spoken_span(delta.heard_until)[1], generation_end)
            if item.end is not None:
                spoken_to = min(spoken_to, item.end)
            self._emit(TranscriptDelta(delta.key, delta.text, spoken_to // SAMPLES_PER_MS))
        if (
            item.final_from is not None
            and item.end is not None
            and generation_end >= item.end  # the generation that hears the item's end
            and spoken_span(delta.heard_until)[1] >= item.final_from
        ):
            item.completed_at = time.perf_counter()
            self._complete(item, "".join(d.text for d in item.deltas), item.end, item.steps)

    def _done(self, done: SegmentDone) -> None:
        item = self._items.pop(done.key)
        if done.key in self._discarded:
            self._discarded.discard(done.key)
            return
        if item.completed_at is None:
            self._complete(item, done.text, item.end if item.end is not None else done.end, done.steps)
            final_s = time.perf_counter() - item.opened_at
        else:
            final_s = item.completed_at - item.opened_at
        if item.late:
            metrics.REALTIME_STREAM_LATE_TEXT.inc()
            log.warning(
                "realtime item %s: vLLM wrote %r after the item's final; raise REALTIME_STREAM_MARGIN_MS",
                item.item_id,
                "".join(item.late),
            )
        end = item.end if item.end is not None else done.end
        log.info(
            "realtime item %s streamed: audio %.2f s in %d generation(s), %d steps, "
            "open→final %.3f s, open→done %.3f s",
            item.item_id,
            (end - item.start) / SAMPLE_RATE,
            done.generations,
            done.steps,
            final_s,
            time.perf_counter() - item.opened_at,
        )

    def _complete(self, item: _Item, text: str, end: int, steps: int) -> None:
        usage = StreamUsage(input_tokens=steps, output_tokens=steps)
        words = tuple(words_from_deltas(item.deltas, audio_end=end))
        completed = TranscriptCompleted(
            item.item_id, text, usage, item.start // SAMPLES_PER_MS, end // SAMPLES_PER_MS, words
        )
        self._emit(completed)
        self._report(completed)

    def _failed(self, exc: RealtimeBackendError) -> None:
        for item_id, item in list(self._items.items()):
            if item_id not in self._discarded and item.completed_at is None:
                failed = TranscriptFailed(item_id, exc.code, str(exc))
                self._emit(failed)
                self._report(failed)
        self._items.clear()
        self._open = None
        self._on_error(exc)

    def _report(self, event: TranscriptCompleted | TranscriptFailed) -> None:
        if event.item_id in self._committed:
            self._committed.discard(event.item_id)
            self._on_turn_done(event)
