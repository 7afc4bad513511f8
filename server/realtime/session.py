"""The protocol-independent core of a realtime session.

Audio comes in through `append`: decoded, resampled to 16 kHz and fed to the app's shared VAD
engine. A speech turn (or a manual commit) becomes a conversation item whose audio is transcribed
by vLLM in its own task while listening goes on. Each turn's transcript events wait in a queue of
their own, and one relay task releases the queues in turn order, so a later turn's text never
overtakes an earlier one's; speech and commit events go out at once. Everything the session
reports goes through `emit`, which must not block. Without server VAD the client commits turns
itself, and what it may buffer for one commit is capped (`max_commit_bytes`).

With a realtime-capable model (`stream` given, see `stream_engine`) the session streams instead:
every decoded sample also goes to a `StreamEngine`, which sends each item's audio to vLLM's
`/v1/realtime` as it arrives and emits the item's deltas while the person speaks and its
`TranscriptCompleted` after the item ends. Speech start opens an item, speech stop or a commit ends
it; without turn detection an item opens at the first audio after a commit (or clear), so all
audio is transcribed. No per-turn transcription or partials run then. If the stream fails,
`on_failure` is called once and the connection ends the session.

Positions are 16 kHz sample counts since the session's first audio; the VAD stream restarts at 0
whenever it is reset, so its positions are offset by `_vad_origin`.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import numpy as np

from server import metrics
from server.audio import encode_wav
from server.errors import APIError
from server.model_names import ModelNames
from server.realtime.assistant import Conversation, Reply
from server.realtime.audio_input import AudioInput
from server.realtime.config import SessionConfig
from server.realtime.events import (
    Committed,
    Event,
    SpeechStarted,
    SpeechStopped,
    TranscriptCompleted,
    TranscriptDelta,
    TranscriptFailed,
    TranscriptPartial,
)
from server.realtime.ids import new_id
from server.realtime.stream_engine import StreamEngine
from server.usage import StreamUsage
from server.vllm_client import VLLMClient
from server.vllm_realtime.errors import RealtimeBackendError
from server.vllm_realtime.probe import RealtimeBackend
from vad import FRAME_SAMPLES, SAMPLE_RATE, BatchedVADEngine, EngineStream
from vad import SpeechStarted as VADStarted

SAMPLES_PER_MS = SAMPLE_RATE // 1000
MIN_COMMIT_MS = 100
log = logging.getLogger("edge.realtime")


def to_ms(position: int) -> int:
    return position // SAMPLES_PER_MS


class AudioBuffer:
    """The session's recent 16 kHz audio, addressed by absolute sample position."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self.start = 0
        self.end = 0

    def append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._chunks.append(samples)
            self.end += len(samples)

    def slice(self, start: int, end: int) -> np.ndarray:
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)
        return audio[max(start - self.start, 0) : end - self.start]

    def drop_before(self, position: int) -> None:
        """Forget whole chunks that end at or before `position`."""
        while self._chunks and self.start + len(self._chunks[0]) <= position:
            self.start += len(self._chunks.pop(0))

    def clear(self) -> None:
        self._chunks = []
        self.start = self.end


@dataclass(eq=False)
class Turn:
    """One user turn: its audio span and how long its transcription took."""

    item_id: str
    start: int
    end: int = 0
    committed_at: float = 0.0
    backend_s: float = 0.0
    audio: np.ndarray | None = None


class RealtimeSession:
    """One live session; create it on the event loop that runs the VAD engine, `close()` it at the end."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        backend: VLLMClient,
        models: ModelNames,
        vad_engine: BatchedVADEngine,
        emit: Callable[[Event], None],
        default_max_tokens: int | None = None,
        max_commit_bytes: int,
        stream: RealtimeBackend | None = None,
        on_failure: Callable[[APIError], None] | None = None,
    ) -> None:
        self.config = config
        self._backend = backend
        self._models = models
        self._engine = vad_engine
        self._emit = emit
        self._default_max_tokens = default_max_tokens
        self._max_commit_bytes = max_commit_bytes
        self._uncommitted_bytes = 0  # input bytes buffered since the last commit (manual commits)
        self._buffer_full = False
        self._input = AudioInput(config.audio_format)
        self._buffer = AudioBuffer()
        self._vad: EngineStream | None = None
        self._vad_origin = 0
        self._open: Turn | None = None
        self._partials: asyncio.Task | None = None
        self._last_item_id: str | None = None
        self._turns: asyncio.Queue[tuple[Turn, asyncio.Queue[Event | None]]] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._reply: Reply | None = None
        self._conversation = Conversation()
        self._on_failure = on_failure
        # The streaming engine (None for the turn engine), its committed items awaiting their
        # transcript, and the item open without turn detection.
        self._stream = StreamEngine(stream, self._stream_event, self._stream_failed) if stream else None
        self._streamed_turns: dict[str, Turn] = {}
        self._stream_item: str | None = None
        self._open_vad()
        self._spawn(self._relay(), "relay")

    async def update(self, config: SessionConfig) -> None:
        """Apply a new configuration; a changed format or turn detection drops the audio buffered so far."""
        if config.transcription.model != self.config.transcription.model:
            await self._models.resolve(config.transcription.model)
        old, self.config = self.config, config
        if config.audio_format != old.audio_format:
            self._input = AudioInput(config.audio_format)
        if config.turn_detection != old.turn_detection or config.audio_format != old.audio_format:
            self._discard_open_turn()
            self._clear_buffer()
            if self._vad is not None:
                self._vad.close()
            self._open_vad()

    async def append(self, payload: bytes) -> None:
        """Take audio in the session's format; with server VAD, turns start and end as it is heard."""
        if self._vad is None:
            self._buffer_manually(payload)
            return
        samples = self._input.decode(payload)
        if self._open is None and self.config.turn_detection is not None:
            prefix = self.config.turn_detection.prefix_padding_ms * SAMPLES_PER_MS
            self._buffer.drop_before(self._buffer.end - prefix - FRAME_SAMPLES)
        self._buffer.append(samples)
        if self._stream is not None:
            self._stream.append(samples)
        for event in await self._vad.feed(samples):
            position = self._vad_origin + event.sample
            if isinstance(event, VADStarted):
                self._start_turn(position)
            elif self._open is not None:
                self._stop_turn(position)

    def _buffer_manually(self, payload: bytes) -> None:
        """Buffer audio until the client commits, up to `max_commit_bytes` of it (as sent, before
        decoding); an append beyond that is dropped, the first one with an error."""
        if self._uncommitted_bytes + len(payload) > self._max_commit_bytes:
            if self._buffer_full:
                return
            self._buffer_full = True
            raise APIError(
                400,
                f"The input audio buffer is full: at most {self._max_commit_bytes / 1_048_576:g} MB of audio per "
                "commit. Audio beyond it is dropped until you commit or clear the buffer.",
                param="audio",
                code="input_audio_buffer_full",
            )
        self._uncommitted_bytes += len(payload)
        samples = self._input.decode(payload)
        if self._stream is not None and len(samples):
            if self._stream_item is None:
                self._stream_item = new_id("item")
                self._stream.start_item(self._stream_item, self._buffer.end)
            self._stream.append(samples)
        self._buffer.append(samples)

    def commit(self) -> None:
        """End the turn now: with server VAD the open turn, otherwise all audio since the last commit."""
        if self._vad is not None:
            if self._open is None:
                raise APIError(
                    400,
                    "There is no speech in the input audio buffer to commit.",
                    code="input_audio_buffer_commit_empty",
                )
            self._restart_vad()
            self._stop_turn(self._buffer.end)
            return
        buffered_ms = to_ms(self._buffer.end - self._buffer.start)
        if buffered_ms < MIN_COMMIT_MS:
            raise APIError(
                400,
                f"The input audio buffer is too small to commit: at least {MIN_COMMIT_MS} ms of audio are needed, "
                f"it holds {buffered_ms} ms.",
                code="input_audio_buffer_commit_empty",
            )
        self._cancel_reply()
        item_id, self._stream_item = self._stream_item or new_id("item"), None
        self._commit(Turn(item_id, self._buffer.start, self._buffer.end))
        self._clear_buffer()

    def clear(self) -> None:
        """Drop the buffered audio and any turn in progress."""
        self._discard_open_turn()
        self._clear_buffer()
        if self._vad is not None:
            self._restart_vad()

    async def close(self) -> None:
        """Stop everything: in-flight vLLM requests are aborted as their tasks are cancelled."""
        if self._stream is not None:
            await self._stream.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._vad is not None:
            self._vad.close()
            self._vad = None

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._uncommitted_bytes = 0
        self._buffer_full = False

    def _open_vad(self) -> None:
        detection = self.config.turn_detection
        self._vad = self._engine.open_stream(detection) if detection else None
        self._vad_origin = self._buffer.end

    def _restart_vad(self) -> None:
        if self._vad is not None:
            self._vad.reset()
        self._vad_origin = self._buffer.end

    def _start_turn(self, position: int) -> None:
        turn = Turn(new_id("item"), position)
        self._open = turn
        self._emit(SpeechStarted(turn.item_id, to_ms(position)))
        self._cancel_reply()
        if self._stream is not None:
            self._stream.start_item(turn.item_id, position)
        elif self.config.transcription.partial_interval_ms > 0:
            self._partials = self._spawn(self._run_partials(turn), f"partials-{turn.item_id}")

    def _stop_turn(self, position: int) -> None:
        turn = self._open
        if turn is None:
            return
        self._end_open_turn()
        turn.end = position
        self._emit(SpeechStopped(turn.item_id, to_ms(position)))
        self._commit(turn)

    def _discard_open_turn(self) -> None:
        """Drop the turn in progress (and, streaming, the open item's text)."""
        self._end_open_turn()
        if self._stream is not None:
            self._stream.discard_item()
            self._stream_item = None

    def _end_open_turn(self) -> None:
        self._open = None
        if self._partials is not None:
            self._partials.cancel()
            self._partials = None

    def _commit(self, turn: Turn) -> None:
        turn.committed_at = time.perf_counter()
        audio = self._buffer.slice(turn.start, turn.end)
        if self.config.assistant.enabled:
            turn.audio = audio
        self._emit(Committed(turn.item_id, self._last_item_id))
        self._last_item_id = turn.item_id
        if self._stream is not None:
            self._streamed_turns[turn.item_id] = turn
            self._stream.end_item(turn.end)
            return
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._turns.put_nowait((turn, events))
        self._spawn(self._transcribe(turn, audio, events), f"transcribe-{turn.item_id}")

    async def _transcribe(self, turn: Turn, audio: np.ndarray, events: asyncio.Queue[Event | None]) -> None:
        usage = StreamUsage()
        parts: list[str] = []
        started = time.perf_counter()
        try:
            settings = self.config.transcription
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
            turn.backend_s = time.perf_counter() - started
            events.put_nowait(
                TranscriptCompleted(turn.item_id, "".join(parts), usage, to_ms(turn.start), to_ms(turn.end))
            )
        except APIError as exc:
            turn.backend_s = time.perf_counter() - started
            events.put_nowait(TranscriptFailed(turn.item_id, exc.code or "transcription_failed", exc.message))
        finally:
            events.put_nowait(None)

    async def _relay(self) -> None:
        """Release each turn's transcript events in turn order."""
        while True:
            turn, events = await self._turns.get()
            while (event := await events.get()) is not None:
                self._emit(event)
                if isinstance(event, (TranscriptCompleted, TranscriptFailed)):
                    self._turn_done(turn, event)

    def _turn_done(self, turn: Turn, event: TranscriptCompleted | TranscriptFailed) -> None:
        total = time.perf_counter() - turn.committed_at
        edge = max(total - turn.backend_s, 0.0)
        outcome = "completed" if isinstance(event, TranscriptCompleted) else "failed"
        metrics.REALTIME_TURNS.labels(outcome).inc()
        metrics.TURN_SECONDS.labels("total").observe(total)
        metrics.TURN_SECONDS.labels("edge").observe(edge)
        metrics.TURN_SECONDS.labels("backend").observe(turn.backend_s)
        log.info(
            "realtime turn %s %s: audio %.2f s, stopped→done %.3f s (edge %.3f s, backend %.3f s)",
            turn.item_id,
            outcome,
            (turn.end - turn.start) / SAMPLE_RATE,
            total,
            edge,
            turn.backend_s,
        )
        self._hear(turn, event)

    def _hear(self, turn: Turn, event: TranscriptCompleted | TranscriptFailed) -> None:
        """The conversation (and the assistant) take in a finished turn."""
        if isinstance(event, TranscriptCompleted):
            if turn.audio is not None and self.config.assistant.enabled and self._is_latest(turn):
                self._start_reply(turn.audio)
            self._conversation.add("user", event.transcript)
        turn.audio = None

    def _stream_event(self, event: Event) -> None:
        """The streaming engine's events, already in item order; deltas may precede `Committed`."""
        self._emit(event)
        if isinstance(event, (TranscriptCompleted, TranscriptFailed)):
            turn = self._streamed_turns.pop(event.item_id, None)
            if turn is not None:
                outcome = "completed" if isinstance(event, TranscriptCompleted) else "failed"
                metrics.REALTIME_TURNS.labels(outcome).inc()
                self._hear(turn, event)

    def _stream_failed(self, exc: RealtimeBackendError) -> None:
        status = 503 if exc.code == "backend_unavailable" else 502
        error = APIError(status, f"Streaming transcription failed: {exc}", code=exc.code)
        if self._on_failure is not None:
            self._on_failure(error)

    def _is_latest(self, turn: Turn) -> bool:
        """No later turn has begun: a reply to an older turn would talk over the user."""
        return turn.item_id == self._last_item_id and self._open is None

    def _start_reply(self, audio: np.ndarray) -> None:
        body = self._conversation.request(audio, self.config.assistant, self._default_max_tokens)
        self._reply = Reply(
            body,
            backend=self._backend,
            models=self._models,
            emit=self._emit,
            on_done=lambda text: self._conversation.add("assistant", text),
        )
        self._track(self._reply.task)

    def _cancel_reply(self) -> None:
        if self._reply is not None:
            self._reply.cancel()
            self._reply = None

    async def _run_partials(self, turn: Turn) -> None:
        """Re-transcribe the open turn every `partial_interval_ms`; cancelled when the turn ends."""
        settings = self.config.transcription
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

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task:
        task = asyncio.create_task(coroutine, name=f"realtime-{name}")
        self._track(task)
        return task

    def _track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("realtime task %s failed", task.get_name(), exc_info=task.exception())
