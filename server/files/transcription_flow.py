"""One transcription or translation request, the same for the HTTP routes and the RunPod jobs:
resolve the model → load the audio → transcribe it whole or as a stream → one log line and the
metrics, with the request's timings.

Errors about the audio (undecodable, a refused URL) come from below as `InputError`s, which do
not know where the audio came from; they are reported here naming the request's field
(`AudioRequest.source_param`: `file`, `url`, or RunPod's `audio`).

The flow is given its collaborators (the model names, the transcriber, the realtime probe), not the
app's service container, so the HTTP routes and the RunPod jobs pass what they hold.
"""

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.backend.model_names import ModelNames
from server.backend.vllm_realtime.errors import RealtimeBackendError
from server.backend.vllm_realtime.probe import RealtimeBackend, RealtimeProbe
from server.backend.vllm_realtime.words import transcribe_with_words
from server.core import metrics
from server.core.audio import SAMPLE_RATE
from server.core.errors import APIError, InputError
from server.files.audio_request import AudioRequest
from server.files.formats import Segment, Transcript
from server.files.transcription import Timings, TranscriptionOptions, TranscriptionService

log = logging.getLogger("edge.audio")

# Runs the transcription; the HTTP route passes one that cancels it when the client hangs up.
Guard = Callable[[Coroutine[Any, Any, Transcript]], Awaitable[Transcript]]


@dataclass
class TranscriptionFlow:
    """A request whose model is resolved and whose audio is loaded, ready to be transcribed once."""

    transcriber: TranscriptionService
    realtime: RealtimeProbe  # the realtime backend, for word timestamps
    request: AudioRequest
    options: TranscriptionOptions
    audio: np.ndarray
    timings: Timings
    label: str  # names the request in logs and metrics: the route, or the RunPod task
    started: float

    @classmethod
    async def start(
        cls,
        request: AudioRequest,
        *,
        task: str,
        label: str,
        models: ModelNames,
        transcriber: TranscriptionService,
        realtime: RealtimeProbe,
    ) -> "TranscriptionFlow":
        """Resolve the model and load the audio; `label` names the request in logs and metrics."""
        started = time.perf_counter()
        timings = Timings()
        options = request.options(task, await models.resolve(request.model))
        try:
            audio = await transcriber.load_audio(request.source, timings)
        except InputError as exc:
            raise exc.api_error(request.source_param) from None
        metrics.AUDIO_SECONDS.labels(label).inc(timings.audio_s)
        return cls(transcriber, realtime, request, options, audio, timings, label=label, started=started)

    async def transcript(self, guard: Guard | None = None) -> Transcript:
        """The whole transcript (run through `guard` if given)."""
        if self.request.words:
            work = self._with_words()
        else:
            work = self.transcriber.transcribe(self.audio, self.options, self.timings)
        try:
            transcript = await (guard(work) if guard else work)
        except APIError as exc:
            self._finish(f"error:{exc.status}")
            raise
        self._finish("ok")
        return transcript

    async def events(self) -> AsyncGenerator[dict[str, Any], None]:
        """OpenAI's stream events (`transcript.text.delta`..., `transcript.text.done`); closing it cancels the rest."""
        status = "closed"
        events = self.transcriber.stream(self.audio, self.options, self.timings)
        try:
            async for event in events:
                yield event
            status = "ok"
        except APIError as exc:
            status = f"error:{exc.status}"
            raise
        finally:
            await events.aclose()
            self._finish(status)

    async def _with_words(self) -> Transcript:
        """Word times come from a realtime model's 80 ms steps: the file is streamed through its
        `/v1/realtime` (`vllm_realtime.words`), as one segment.

        The realtime backend is the one live sessions use (`REALTIME_VLLM_URL`'s, else the main
        vLLM's), found by the shared `RealtimeProbe`."""
        backend = None
        if self.options.task == "transcribe":
            backend = await self.realtime.backend()
        if backend is None or not self._may_use(backend):
            raise APIError(
                400,
                "Word timestamps are available only for transcriptions by a realtime model (Voxtral Realtime); "
                f"`{self.options.model}` is not one. Use `segment`, which comes from speech detection.",
                param="timestamp_granularities",
                code="unsupported_value",
            )
        started = time.perf_counter()
        try:
            text, words = await transcribe_with_words(backend, self.audio)
        except RealtimeBackendError as exc:
            raise APIError(502, f"Streaming transcription failed: {exc}", code=exc.code) from exc
        self.timings.backend_s = time.perf_counter() - started
        self.timings.chunks = 1
        duration = len(self.audio) / SAMPLE_RATE
        text = text.strip()
        return Transcript(text, duration, self.options.language, [Segment(0.0, duration, text)], words)

    def _may_use(self, backend: RealtimeBackend) -> bool:
        """Whether the request's model may be transcribed by `backend`: it is `backend`'s own, or the
        request named none or an alias (a name standing for the edge's models). A request naming
        the served model itself asks for that model, which a separate realtime vLLM does not serve."""
        return backend.model == self.options.model or self.request.model != self.options.model

    def _finish(self, status: str) -> None:
        timings, total = self.timings, time.perf_counter() - self.started
        for stage, seconds in (("decode", timings.decode_s), ("vad", timings.vad_s), ("backend", timings.backend_s)):
            metrics.STAGE_SECONDS.labels(stage).observe(seconds)
        metrics.STAGE_SECONDS.labels("total").observe(total)
        metrics.BACKEND_CHUNKS.labels(self.options.task).inc(timings.chunks)
        log.info(
            "%s %s format=%s stream=%s audio=%.2fs chunks=%d decode=%.1fms vad=%.1fms backend=%.1fms total=%.1fms",
            self.label,
            status,
            self.request.response_format,
            self.request.stream,
            timings.audio_s,
            timings.chunks,
            timings.decode_s * 1e3,
            timings.vad_s * 1e3,
            timings.backend_s * 1e3,
            total * 1e3,
        )
