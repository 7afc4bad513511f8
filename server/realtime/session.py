"""The protocol-independent core of a realtime session.

Audio comes in through `append`: decoded, resampled to 16 kHz, kept in an `AudioBuffer` and fed to
the app's shared VAD engine and to the session's transcription engine. A speech turn (server VAD)
or the audio up to a manual commit becomes a conversation item; the session decides where each
item begins and ends and tells the engine (see `transcription_engine`), which emits the item's
transcript events in item order and reports each finished one back. Speech and commit events go
out at once. Everything the session reports goes through `emit`, which must not block. Without
server VAD the client commits turns itself, and what it may buffer for one commit is capped
(`max_commit_bytes`); an item opens at the first audio after a commit (or clear).

The engine is a `TurnEngine` (each item transcribed whole once it ends, with live partials), or
with a realtime-capable model (`stream` given) a `StreamEngine`, which streams each item's audio
to vLLM's `/v1/realtime` as it arrives. If the stream fails, `on_failure` is called once and the
connection ends the session. A conversation session (`kind == "realtime"`) also has a `Responder`:
its turns join the conversation as they are committed, speech interrupts a response, and the end
of a turn starts one (see `conversation.responder`). Its transcripts are made either way (earlier
turns reach the model as their transcripts); `transcription.events` says whether they are sent.

With `eager_pause_ms`, server VAD also reports pauses that short inside a turn and the speech that
resumes after them, and the engine may start on the turn's end early (eager finals, see
`turn_engine`). With `semantic_vad` and a `turn_judge`, each pause is also put to the turn model,
and a turn that sounds finished ends where its pause began (see `semantic_turns`); with
`eager_after_check` the eager transcription starts only once the model has said "not finished".
The verdict is applied between two VAD steps, and only if no speech has come since the pause.

Positions are 16 kHz sample counts since the session's first audio; the VAD stream restarts at 0
whenever it is reset, so its positions are offset by `_vad_origin`.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from server.backend.model_names import ModelNames
from server.backend.vllm_client import VLLMClient
from server.backend.vllm_realtime.errors import RealtimeBackendError
from server.backend.vllm_realtime.probe import RealtimeBackend
from server.core import metrics
from server.core.errors import APIError
from server.realtime.audio_buffer import MIN_COMMIT_MS, SAMPLES_PER_MS, AudioBuffer, to_ms
from server.realtime.audio_input import AudioInput
from server.realtime.config import SessionConfig
from server.realtime.conversation.responder import Responder
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
from server.realtime.semantic_turns import TurnJudge, stream_params
from server.realtime.stream_engine import StreamEngine
from server.realtime.tasks import TaskSet
from server.realtime.transcription_engine import TranscriptionEngine
from server.realtime.turn_engine import TurnEngine
from vad import FRAME_SAMPLES, BatchedVADEngine, EngineStream, SpeechPaused, SpeechResumed
from vad import SpeechStarted as VADStarted


@dataclass(frozen=True)
class Item:
    """The conversation item in progress: its id and where its audio begins."""

    item_id: str
    start: int


class RealtimeSession:
    """One live session; create it on the event loop that runs the VAD engine, `aclose()` it at the end."""

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
        conversation_max_bytes: int,
        audio_turns: int,
        eager_pause_ms: int = 0,
        eager_after_check: bool = False,
        stream_margin_ms: int = 0,
        turn_judge: TurnJudge | None = None,
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
        self._open: Item | None = None  # server VAD's turn in progress
        self._manual: Item | None = None  # without turn detection, the item the buffered audio belongs to
        self._last_item_id: str | None = None
        self._conversation_max_bytes = conversation_max_bytes
        self._audio_turns = audio_turns
        self._eager_pause_ms = eager_pause_ms
        self._eager_after_check = eager_after_check
        self._stream_margin_ms = stream_margin_ms
        self._judge = turn_judge
        self._judgements = TaskSet()
        self._pause: tuple[Item, int] | None = None  # the open turn's current pause, if any
        self._finished_at: tuple[Item, int] | None = None  # a pause the turn model says ends the turn
        self._feeding = False
        self.responder: Responder | None = None
        self._open_responder()
        self._on_failure = on_failure
        self._transcriber = self._open_engine(stream)
        self._open_vad()

    async def update(self, config: SessionConfig) -> None:
        """Apply a new configuration; a changed format or turn detection drops the audio buffered so far."""
        if config.transcription.model != self.config.transcription.model:
            await self._models.resolve(config.transcription.model)
        if config.kind == "realtime" and config.conversation.model != self.config.conversation.model:
            try:
                await self._models.resolve(config.conversation.model)
            except APIError as exc:
                exc.param = "session.model"
                raise
        old, self.config = self.config, config
        if config.kind != old.kind:
            if self.responder is not None:
                await self.responder.aclose()
                self.responder = None
            self._open_responder()
        if config.audio_format != old.audio_format:
            self._input = AudioInput(config.audio_format)
        semantic_changed = (config.turn.type, config.turn.eagerness) != (old.turn.type, old.turn.eagerness)
        if config.turn_detection != old.turn_detection or config.audio_format != old.audio_format or semantic_changed:
            self._discard_open_item()
            self._clear_buffer()
            if self._vad is not None:
                self._vad.close()
            self._open_vad()

    async def append(self, payload: bytes) -> None:
        """Take audio in the session's format; with server VAD, turns start and end as it is heard."""
        if self._vad is None:
            if self._room_for(len(payload)):
                self._buffer_manually(self._input.decode(payload))
            return
        await self._hear(self._input.decode(payload))

    async def append_samples(self, samples: np.ndarray) -> None:
        """Take 16 kHz float32 audio the transport decoded itself (a WebRTC call's microphone track)."""
        if self._vad is None:
            if self._room_for(len(samples) * 2):  # counted as the 16 kHz PCM16 it amounts to
                self._buffer_manually(samples)
            return
        await self._hear(samples)

    async def _hear(self, samples: np.ndarray) -> None:
        assert self._vad is not None
        if self._open is None and self.config.turn_detection is not None:
            prefix = self.config.turn_detection.prefix_padding_ms * SAMPLES_PER_MS
            self._buffer.drop_before(self._buffer.end - prefix - FRAME_SAMPLES)
        self._buffer.append(samples)
        self._transcriber.append(samples)
        self._feeding = True
        try:
            events = await self._vad.feed(samples)
        finally:
            self._feeding = False
        for event in events:
            position = self._vad_origin + event.sample
            if isinstance(event, VADStarted):
                self._start_turn(position)
            elif self._open is None:
                continue
            elif isinstance(event, SpeechPaused):
                self._paused(self._open, position)
            elif isinstance(event, SpeechResumed):
                self._pause = None
                self._transcriber.resume()
            else:
                self._stop_turn(position)
        self._end_finished_turn()

    def _paused(self, item: Item, position: int) -> None:
        self._pause = (item, position)
        semantic = self._semantic()
        if not (semantic and self._eager_after_check):
            self._transcriber.pause(position)
        if semantic:
            audio = self._buffer.slice(item.start, self._buffer.end)
            self._judgements.spawn(self._judge_pause((item, position), audio), f"turn-check-{item.item_id}")

    async def _judge_pause(self, pause: tuple[Item, int], audio: np.ndarray) -> None:
        """Put a pause to the turn model.

        With `eager_after_check` the pause's eager transcription waits for the answer, so that the
        check and the transcription do not compete for the same cores when vLLM runs on the CPU
        (benchmarks/README.md, "Time to final segment"): a finished turn ends here and is
        transcribed as it ends, an unfinished one is transcribed now, in case the longest wait
        ends it at this pause.
        """
        assert self._judge is not None
        finished = await self._judge.finished(audio, self.config.turn.eagerness)
        if self._pause != pause:
            return
        if not finished:
            if self._eager_after_check:
                self._transcriber.pause(pause[1])
            return
        self._finished_at = pause
        if not self._feeding:
            self._end_finished_turn()

    def _end_finished_turn(self) -> None:
        """The turn the model judged finished ends at its pause, if nothing has happened since."""
        finished, self._finished_at = self._finished_at, None
        if finished is not None and self._pause == finished and self._open is finished[0]:
            self._restart_vad()
            self._stop_turn(finished[1])

    def _semantic(self) -> bool:
        return self._judge is not None and self.config.turn.type == "semantic_vad"

    def _room_for(self, size: int) -> bool:
        """Whether `size` more bytes (as sent, before decoding) fit the manual buffer's
        `max_commit_bytes`; an append beyond that is dropped, the first one with an error."""
        if self._uncommitted_bytes + size > self._max_commit_bytes:
            if self._buffer_full:
                return False
            self._buffer_full = True
            raise APIError(
                400,
                f"The input audio buffer is full: at most {self._max_commit_bytes / 1_048_576:g} MB of audio per "
                "commit. Audio beyond it is dropped until you commit or clear the buffer.",
                param="audio",
                code="input_audio_buffer_full",
            )
        self._uncommitted_bytes += size
        return True

    def _buffer_manually(self, samples: np.ndarray) -> None:
        """Buffer audio until the client commits."""
        if len(samples) and self._manual is None:
            self._manual = Item(new_id("item"), self._buffer.end)
            self._transcriber.start_item(self._manual.item_id, self._manual.start)
        self._transcriber.append(samples)
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
        item = self._manual  # open whenever audio is buffered
        if buffered_ms < MIN_COMMIT_MS or item is None:
            raise APIError(
                400,
                f"The input audio buffer is too small to commit: at least {MIN_COMMIT_MS} ms of audio are needed, "
                f"it holds {buffered_ms} ms.",
                code="input_audio_buffer_commit_empty",
            )
        self._manual = None
        self._commit(item, self._buffer.end)
        self._clear_buffer()

    def clear(self) -> None:
        """Drop the buffered audio and any turn in progress."""
        self._discard_open_item()
        self._clear_buffer()
        if self._vad is not None:
            self._restart_vad()

    async def aclose(self) -> None:
        """Stop everything: in-flight vLLM requests are aborted as their tasks are cancelled."""
        await self._judgements.aclose()
        await self._transcriber.aclose()
        if self.responder is not None:
            await self.responder.aclose()
        if self._vad is not None:
            self._vad.close()
            self._vad = None

    def _open_engine(self, stream: RealtimeBackend | None) -> TranscriptionEngine:
        """The streaming engine with a realtime backend, else the turn engine."""
        if stream is not None:
            return StreamEngine(
                stream,
                self._emit_transcript,
                self._stream_failed,
                on_turn_done=self._turn_done,
                margin_ms=self._stream_margin_ms,
            )
        return TurnEngine(
            self._buffer,
            lambda: self.config,
            backend=self._backend,
            models=self._models,
            emit=self._emit_transcript,
            on_turn_done=self._turn_done,
        )

    def _open_responder(self) -> None:
        if self.config.kind == "realtime":
            self.responder = Responder(
                lambda: self.config,
                backend=self._backend,
                models=self._models,
                emit=self._emit,
                max_bytes=self._conversation_max_bytes,
                audio_turns=self._audio_turns,
                default_max_tokens=self._default_max_tokens,
            )

    def _emit_transcript(self, event: Event) -> None:
        """The engines' events: a conversation session may leave the transcription events out."""
        transcript = isinstance(event, TranscriptDelta | TranscriptPartial | TranscriptCompleted | TranscriptFailed)
        if self.config.transcription.events or not transcript:
            self._emit(event)

    def _clear_buffer(self) -> None:
        self._buffer.clear()
        self._uncommitted_bytes = 0
        self._buffer_full = False

    def _open_vad(self) -> None:
        detection = self.config.turn_detection
        if detection is not None and self._semantic():
            detection = stream_params(detection, self.config.turn.eagerness, self._eager_pause_ms)
        elif detection is not None and self._eager_pause_ms:
            detection = replace(detection, pause_ms=self._eager_pause_ms)
        self._vad = self._engine.open_stream(detection) if detection else None
        self._vad_origin = self._buffer.end

    def _restart_vad(self) -> None:
        if self._vad is not None:
            self._vad.reset()
        self._vad_origin = self._buffer.end
        self._pause = None

    def _start_turn(self, position: int) -> None:
        self._pause = None
        item = Item(new_id("item"), position)
        self._open = item
        self._emit(SpeechStarted(item.item_id, to_ms(position)))
        if self.responder is not None:
            self.responder.speech_started()
        self._transcriber.start_item(item.item_id, position)

    def _stop_turn(self, position: int) -> None:
        item = self._open
        if item is None:
            return
        self._open = None
        self._emit(SpeechStopped(item.item_id, to_ms(position)))
        self._commit(item, position)

    def _discard_open_item(self) -> None:
        """Drop the item in progress (and the engine's text of it)."""
        self._open = None
        self._manual = None
        self._transcriber.discard_item()

    def _commit(self, item: Item, end: int) -> None:
        responder = self.responder
        previous = self._last_item_id if responder is None else responder.items.last_id
        self._emit(Committed(item.item_id, previous))
        self._last_item_id = item.item_id
        if responder is not None:
            responder.user_turn(item.item_id, self._buffer.slice(item.start, end))
        self._transcriber.end_item(end)
        if responder is not None and self._vad is not None:
            responder.turn_ended()

    def _turn_done(self, event: TranscriptCompleted | TranscriptFailed) -> None:
        """A committed item's transcript is final: count it; the conversation takes it in."""
        outcome = "completed" if isinstance(event, TranscriptCompleted) else "failed"
        metrics.REALTIME_TURNS.labels(outcome).inc()
        if isinstance(event, TranscriptCompleted) and self.responder is not None:
            self.responder.transcribed(event.item_id, event.transcript)

    def _stream_failed(self, exc: RealtimeBackendError) -> None:
        status = 503 if exc.code == "backend_unavailable" else 502
        error = APIError(status, f"Streaming transcription failed: {exc}", code=exc.code)
        if self._on_failure is not None:
            self._on_failure(error)
