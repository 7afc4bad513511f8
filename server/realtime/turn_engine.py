"""The turn engine of a realtime session: each item transcribed whole by vLLM once it ends.

An ended item's audio goes to vLLM's transcription endpoint in a task of its own while listening
goes on. Each item's transcript events wait in a queue of their own, and one relay task releases
the queues in item order, so a later item's text never overtakes an earlier one's. With
`partial_interval_ms` > 0 and server VAD, the open item is re-transcribed that often and sent as
`TranscriptPartial` (not for a manual buffer, which may hold minutes of audio).

Eager finals: when the session says the open item's speech has paused (`pause`, see
`vad.SpeechPaused`), the item is transcribed up to where it would end, before the silence window
confirms the end. Its events wait unseen; if the item then ends exactly there, they are released
as its final at once, and if speech resumes or the item ends elsewhere, the request is cancelled
(aborted at vLLM) and nothing of it is ever emitted. At most one such request runs per item, and
each is counted (`edge_realtime_eager_transcriptions_total{outcome}`).

The engine reads the audio from the session's `AudioBuffer`, which keeps the open item's audio
(and its prefix padding) until the item ends; `append` has nothing to do.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass

import numpy as np

from server.backend.model_names import ModelNames
from server.backend.vllm_client import VLLMClient
from server.core import metrics
from server.core.audio import encode_wav
from server.core.errors import APIError
from server.core.usage import StreamUsage
from server.realtime.audio_buffer import MIN_COMMIT_MS, AudioBuffer, to_ms
from server.realtime.config import SessionConfig
from server.realtime.events import Event, TranscriptCompleted, TranscriptDelta, TranscriptFailed, TranscriptPartial
from server.realtime.tasks import TaskSet
from server.realtime.transcription_engine import TurnDone
from vad import SAMPLE_RATE

log = logging.getLogger("edge.realtime")


@dataclass(eq=False)
class _Turn:
    """One item: its audio span, and when it was committed and its transcription sent and answered."""

    item_id: str
    start: int
    end: int = 0
    committed_at: float = 0.0
    sent_at: float = 0.0
    answered_at: float = 0.0
    eager: bool = False

    @property
    def backend_s(self) -> float:
        """The time after the commit spent waiting on vLLM (none if an eager answer came before)."""
        return max(self.answered_at - max(self.sent_at, self.committed_at), 0.0)


@dataclass(eq=False)
class _Speculation:
    """An eager transcription of the open item up to `turn.end`, its events held back."""

    turn: _Turn
    events: "asyncio.Queue[Event | None]"
    task: asyncio.Task


class TurnEngine:
    """Whole-turn transcripts of one session's items; see the module docstring.

    `config` gives the session's current configuration: a transcription uses the model and
    language of the moment it starts.
    """

    def __init__(
        self,
        buffer: AudioBuffer,
        config: Callable[[], SessionConfig],
        *,
        backend: VLLMClient,
        models: ModelNames,
        emit: Callable[[Event], None],
        on_turn_done: TurnDone,
    ) -> None:
        self._buffer = buffer
        self._config = config
        self._backend = backend
        self._models = models
        self._emit = emit
        self._on_turn_done = on_turn_done
        self._open: _Turn | None = None
        self._partials: asyncio.Task | None = None
        self._eager: _Speculation | None = None
        self._turns: asyncio.Queue[tuple[_Turn, asyncio.Queue[Event | None]]] = asyncio.Queue()
        self._tasks = TaskSet()
        self._tasks.spawn(self._relay(), "relay")

    def start_item(self, item_id: str, position: int) -> None:
        self._end_open()
        turn = _Turn(item_id, position)
        self._open = turn
        config = self._config()
        if config.turn_detection is not None and config.transcription.partial_interval_ms > 0:
            self._partials = self._tasks.spawn(self._run_partials(turn), f"partials-{item_id}")

    def append(self, samples: np.ndarray) -> None:
        """Nothing to do: the audio is read from the session's buffer."""

    def pause(self, position: int) -> None:
        turn = self._open
        if turn is None or self._eager is not None or to_ms(position - turn.start) < MIN_COMMIT_MS:
            return
        eager = _Turn(turn.item_id, turn.start, position, eager=True)
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        audio = self._buffer.slice(eager.start, eager.end)
        task = self._tasks.spawn(self._transcribe(eager, audio, events), f"eager-{turn.item_id}")
        self._eager = _Speculation(eager, events, task)

    def resume(self) -> None:
        self._drop_eager()

    def end_item(self, position: int) -> None:
        turn = self._open
        if turn is None:
            return
        eager, self._eager = self._eager, None
        self._end_open()
        committed_at = time.perf_counter()
        if eager is not None and eager.turn.end == position:
            metrics.EAGER_TRANSCRIPTIONS.labels("used").inc()
            eager.turn.committed_at = committed_at
            self._turns.put_nowait((eager.turn, eager.events))
            return
        if eager is not None:
            self._discard(eager)
        turn.end = position
        turn.committed_at = committed_at
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._turns.put_nowait((turn, events))
        audio = self._buffer.slice(turn.start, turn.end)
        self._tasks.spawn(self._transcribe(turn, audio, events), f"transcribe-{turn.item_id}")

    def discard_item(self) -> None:
        self._end_open()

    async def aclose(self) -> None:
        await self._tasks.aclose()

    def _end_open(self) -> None:
        self._open = None
        self._drop_eager()
        if self._partials is not None:
            self._partials.cancel()
            self._partials = None

    def _drop_eager(self) -> None:
        if self._eager is not None:
            self._discard(self._eager)
            self._eager = None

    @staticmethod
    def _discard(eager: _Speculation) -> None:
        eager.task.cancel()
        metrics.EAGER_TRANSCRIPTIONS.labels("discarded").inc()

    async def _transcribe(self, turn: _Turn, audio: np.ndarray, events: asyncio.Queue[Event | None]) -> None:
        usage = StreamUsage()
        parts: list[str] = []
        turn.sent_at = time.perf_counter()
        try:
            settings = self._config().transcription
            model = await self._models.resolve(settings.model)
            stream = self._backend.transcribe_stream(
                encode_wav(audio),
                task="transcribe",
                model=model,
                language=settings.language,
                temperature=0.0,
                usage=usage,
            )
            async with aclosing(stream) as deltas:
                async for delta in deltas:
                    parts.append(delta)
                    events.put_nowait(TranscriptDelta(turn.item_id, delta))
            turn.answered_at = time.perf_counter()
            events.put_nowait(
                TranscriptCompleted(turn.item_id, "".join(parts), usage, to_ms(turn.start), to_ms(turn.end))
            )
        except APIError as exc:
            turn.answered_at = time.perf_counter()
            events.put_nowait(TranscriptFailed(turn.item_id, exc.code or "transcription_failed", exc.message))
        finally:
            events.put_nowait(None)

    async def _relay(self) -> None:
        """Release each item's transcript events in item order."""
        while True:
            turn, events = await self._turns.get()
            while (event := await events.get()) is not None:
                self._emit(event)
                if isinstance(event, (TranscriptCompleted, TranscriptFailed)):
                    self._log_turn(turn, event)
                    self._on_turn_done(event)

    def _log_turn(self, turn: _Turn, event: TranscriptCompleted | TranscriptFailed) -> None:
        """The item's timings, from its commit to its final event: a log line and `TURN_SECONDS`."""
        total = time.perf_counter() - turn.committed_at
        backend = min(turn.backend_s, total)
        edge = total - backend
        metrics.TURN_SECONDS.labels("total").observe(total)
        metrics.TURN_SECONDS.labels("edge").observe(edge)
        metrics.TURN_SECONDS.labels("backend").observe(backend)
        log.info(
            "realtime turn %s %s: audio %.2f s, stopped→done %.3f s (edge %.3f s, backend %.3f s)%s",
            turn.item_id,
            "completed" if isinstance(event, TranscriptCompleted) else "failed",
            (turn.end - turn.start) / SAMPLE_RATE,
            total,
            edge,
            backend,
            f", eager: sent {turn.committed_at - turn.sent_at:.3f} s before the end" if turn.eager else "",
        )

    async def _run_partials(self, turn: _Turn) -> None:
        """Re-transcribe the open item every `partial_interval_ms`; cancelled when it ends."""
        settings = self._config().transcription
        interval = settings.partial_interval_ms / 1000
        model = await self._models.resolve(settings.model)
        transcribed_to = turn.start
        while True:
            await asyncio.sleep(interval)
            end = self._buffer.end
            if to_ms(end - turn.start) < MIN_COMMIT_MS or end == transcribed_to:
                continue
            transcribed_to = end
            wav = encode_wav(self._buffer.slice(turn.start, end))
            try:
                result = await self._backend.transcribe(
                    wav, task="transcribe", model=model, language=settings.language, temperature=0.0
                )
            except APIError as exc:
                log.warning("partial transcript of %s failed: %s", turn.item_id, exc.message)
                continue
            if self._open is turn:
                self._emit(TranscriptPartial(turn.item_id, result.text))
