"""The transcription service: audio in, transcript out, with vLLM doing the speech recognition.

Path of a request: decode (PyAV, 16 kHz mono) → plan chunks → send chunks to vLLM concurrently →
stitch the texts in order. Planning:

- A short clip (≤ `MAX_CHUNK_S`) that needs no timestamps goes to vLLM whole, with no VAD, so
  the edge adds as little latency as possible.
- Otherwise Silero VAD finds the speech. With `chunking_strategy` "auto" (the default), speech
  regions are packed greedily into chunks of at most `MAX_CHUNK_S`, cut only in pauses; with an
  explicit `server_vad` strategy every speech region (as the client's VAD parameters define it)
  is its own chunk. Silence between chunks is never sent. Audio in which VAD finds no speech at
  all is sent whole, in windows of `MAX_CHUNK_S`, rather than dropped.

Each chunk becomes one segment of `verbose_json`/SRT/VTT; its start and end are offsets into the
original audio. The HTTP routes and the RunPod worker both call this module.

Chunks in flight are bounded twice: `MAX_CHUNK_CONCURRENCY` per request, and one budget of
`MAX_FILE_BACKEND_REQUESTS` for all file work of the edge, shared fairly between requests, which
shrinks to `MAX_FILE_BACKEND_REQUESTS_LIVE` while realtime sessions are open
(`server.files.file_scheduler`). Decoding and VAD run in `FILE_PREP_THREADS` low-priority threads
(`server.files.file_prep`), so that they take the cores only when live work leaves them.
"""

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from server.backend.vllm_client import VLLMClient
from server.core.audio import SAMPLE_RATE, decode_audio, encode_wav
from server.core.settings import Settings
from server.core.tasks import cancel_and_wait
from server.core.usage import StreamUsage
from server.files.fetch import SafeFetcher
from server.files.file_prep import FilePrep
from server.files.file_scheduler import FileBackendBudget
from server.files.formats import Segment, Transcript
from vad import VADParams, speech_segments
from vad.model import ProbabilityModel


@dataclass(frozen=True)
class ServerVadChunking:
    """OpenAI's `chunking_strategy: {"type": "server_vad", ...}`, with OpenAI's defaults."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 200


@dataclass(frozen=True)
class TranscriptionOptions:
    task: str = "transcribe"
    model: str = ""
    language: str | None = None
    temperature: float = 0.0
    need_segments: bool = False
    chunking: ServerVadChunking | None = None


@dataclass
class Timings:
    """Where a request's time went, for the log line and the metrics."""

    audio_s: float = 0.0
    decode_s: float = 0.0
    vad_s: float = 0.0
    backend_s: float = 0.0
    chunks: int = 0


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int


class TextJoiner:
    """Joins chunk texts (whole or as streamed deltas) with single spaces, without leading blanks.

    Streaming and non-streaming responses both go through it, so they give the same text.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._chunk: int | None = None
        self._chunk_has_text = False

    def add(self, chunk: int, delta: str) -> str:
        """Add text of chunk `chunk`; return what to emit for it (possibly "")."""
        if chunk != self._chunk:
            self._chunk, self._chunk_has_text = chunk, False
        if not self._chunk_has_text:
            delta = delta.lstrip()
            if not delta:
                return ""
            self._chunk_has_text = True
            if self._parts:
                delta = " " + delta
        self._parts.append(delta)
        return delta

    @property
    def text(self) -> str:
        return "".join(self._parts).strip()


def pack_regions(regions: list[tuple[int, int]], max_samples: int) -> list[Chunk]:
    """Greedily pack ordered speech regions into chunks no longer than `max_samples`."""
    chunks: list[Chunk] = []
    for start, end in regions:
        if chunks and end - chunks[-1].start <= max_samples:
            chunks[-1] = Chunk(chunks[-1].start, end)
        else:
            chunks.append(Chunk(start, end))
    return chunks


def fixed_windows(n_samples: int, max_samples: int) -> list[Chunk]:
    """Consecutive windows over the whole audio, for audio in which VAD found no speech at all.

    VAD decides where to cut, never whether a recording is worth transcribing: quiet or unusual
    speech that Silero misses is still sent rather than silently dropped.
    """
    return [Chunk(start, min(start + max_samples, n_samples)) for start in range(0, n_samples, max_samples)]


class TranscriptionService:
    def __init__(
        self, settings: Settings, backend: VLLMClient, fetcher: SafeFetcher, vad_model: ProbabilityModel
    ) -> None:
        """`vad_model` segments whole files.

        `vad.SileroSequenceModel` is the one to pass: it gives the frame model's (`vad.SileroModel`)
        segments, faster (`benchmarks/files_bench.py`, "Offline VAD" in benchmarks/README.md).
        """
        self.settings = settings
        self.backend = backend
        self.fetcher = fetcher
        self.vad_model = vad_model
        self.file_budget = FileBackendBudget(
            settings.max_file_backend_requests, live_capacity=settings.max_file_backend_requests_live
        )
        self.prep = FilePrep(settings.file_prep_threads)

    async def load_audio(self, source: bytes | BinaryIO | str, timings: Timings) -> np.ndarray:
        """Decode an upload (bytes or file) or fetch and decode a URL, in a file-preparation thread.

        Raises `InputError` (no request field) for audio or a URL that cannot be used.
        """
        if isinstance(source, str):
            media = await self.fetcher.fetch(source)
            source = media.file
        started = time.perf_counter()
        try:
            audio = await self.prep.run(decode_audio, source, max_duration_s=self.settings.max_audio_s)
        finally:
            if not isinstance(source, bytes):
                source.close()
        timings.decode_s = time.perf_counter() - started
        timings.audio_s = len(audio) / SAMPLE_RATE
        return audio

    def _plan_sync(self, audio: np.ndarray, opts: TranscriptionOptions) -> list[Chunk]:
        max_samples = int(self.settings.max_chunk_s * SAMPLE_RATE)
        if opts.chunking is None and not opts.need_segments and len(audio) <= max_samples:
            return [Chunk(0, len(audio))]
        if opts.chunking is not None:
            params = VADParams(
                threshold=opts.chunking.threshold,
                min_silence_duration_ms=opts.chunking.silence_duration_ms,
                speech_pad_ms=opts.chunking.prefix_padding_ms,
                max_speech_duration_s=self.settings.max_chunk_s,
            )
        else:
            params = VADParams(
                threshold=self.settings.vad_threshold,
                min_silence_duration_ms=self.settings.vad_min_silence_ms,
                speech_pad_ms=self.settings.vad_speech_pad_ms,
                max_speech_duration_s=self.settings.max_chunk_s,
            )
        regions = [(s.start_sample, s.end_sample) for s in speech_segments(audio, params, self.vad_model)]
        if not regions:
            return fixed_windows(len(audio), max_samples)
        if opts.chunking is not None:
            return [Chunk(start, end) for start, end in regions]
        return pack_regions(regions, max_samples)

    async def plan_chunks(self, audio: np.ndarray, opts: TranscriptionOptions, timings: Timings) -> list[Chunk]:
        started = time.perf_counter()
        chunks = await self.prep.run(self._plan_sync, audio, opts)
        timings.vad_s = time.perf_counter() - started
        timings.chunks = len(chunks)
        return chunks

    async def transcribe(self, audio: np.ndarray, opts: TranscriptionOptions, timings: Timings) -> Transcript:
        """The whole transcript; chunks go to vLLM concurrently, at most `MAX_CHUNK_CONCURRENCY` at once
        and within the shared file budget."""
        chunks = await self.plan_chunks(audio, opts, timings)
        limit = asyncio.Semaphore(self.settings.max_chunk_concurrency)
        job = self.file_budget.job()

        async def one(chunk: Chunk) -> str:
            async with limit, job.slot():
                result = await self.backend.transcribe(
                    encode_wav(audio[chunk.start : chunk.end]),
                    task=opts.task,
                    model=opts.model,
                    language=opts.language,
                    temperature=opts.temperature,
                )
                return result.text

        started = time.perf_counter()
        tasks = [asyncio.create_task(one(c)) for c in chunks]
        try:
            texts = await asyncio.gather(*tasks)
        finally:
            await cancel_and_wait(tasks, shielded=True)
        timings.backend_s = time.perf_counter() - started
        joiner = TextJoiner()
        segments = []
        for i, (chunk, text) in enumerate(zip(chunks, texts, strict=False)):
            joiner.add(i, text)
            segments.append(Segment(chunk.start / SAMPLE_RATE, chunk.end / SAMPLE_RATE, text.strip()))
        return Transcript(joiner.text, len(audio) / SAMPLE_RATE, opts.language, segments)

    async def stream(
        self, audio: np.ndarray, opts: TranscriptionOptions, timings: Timings
    ) -> AsyncGenerator[dict[str, Any], None]:
        """OpenAI stream events: `transcript.text.delta`… then `transcript.text.done` with usage.

        Chunks are transcribed concurrently; their deltas are buffered and released in order.
        Closing the iterator cancels every chunk still running (and so its vLLM request).
        """
        chunks = await self.plan_chunks(audio, opts, timings)
        limit = asyncio.Semaphore(self.settings.max_chunk_concurrency)
        job = self.file_budget.job()
        usage = StreamUsage()
        queues: list[asyncio.Queue[str | BaseException | None]] = [asyncio.Queue() for _ in chunks]

        async def run(i: int, chunk: Chunk) -> None:
            try:
                async with limit, job.slot():
                    async for delta in self.backend.transcribe_stream(
                        encode_wav(audio[chunk.start : chunk.end]),
                        task=opts.task,
                        model=opts.model,
                        language=opts.language,
                        temperature=opts.temperature,
                        usage=usage,
                    ):
                        queues[i].put_nowait(delta)
            except Exception as exc:
                queues[i].put_nowait(exc)
            finally:
                queues[i].put_nowait(None)

        started = time.perf_counter()
        tasks = [asyncio.create_task(run(i, c)) for i, c in enumerate(chunks)]
        try:
            joiner = TextJoiner()
            for i, queue in enumerate(queues):
                while (item := await queue.get()) is not None:
                    if isinstance(item, BaseException):
                        raise item
                    if delta := joiner.add(i, item):
                        yield {"type": "transcript.text.delta", "delta": delta}
            timings.backend_s = time.perf_counter() - started
            yield {
                "type": "transcript.text.done",
                "text": joiner.text,
                "usage": usage.openai_usage(),
            }
        finally:
            await cancel_and_wait(tasks, shielded=True)
