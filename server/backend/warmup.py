"""Warming vLLM up before the edge says it is ready, so that users' first requests are not the slow ones.

A fresh vLLM takes its first requests of each kind far slower than later ones (its engine's first
passes, its API server's first request of a route). Once vLLM serves the model (`readiness`),
`Warmup` sends `WARMUP_REQUESTS` small requests of each kind the edge sends, one after another:

- `transcription`: a file chunk (`/v1/audio/transcriptions`, as `server.files` sends it);
- `transcription stream`: the same streamed, as realtime turns and `stream=true` files send it;
- `chat`: a chat completion with the clip as `input_audio`, as conversation sessions send it (not
  to a main vLLM serving Voxtral Realtime: vLLM 0.32's engine dies of audio chat to that model);
- `realtime`: the clip streamed through vLLM's `/v1/realtime`, when live sessions stream (a
  realtime model at `REALTIME_VLLM_URL`, or the main vLLM's, and `REALTIME_ENGINE` not `turns`).

Every request's clip is different: vLLM caches processed audio by its content, so a clip sent again
would skip the audio encoder that a user's new audio goes through. Requests are capped at
`MAX_TOKENS` (random weights never stop by themselves) and `REQUEST_TIMEOUT_S`.

A kind whose request fails is left there (its later requests are not sent) and the warm-up goes
on; it always ends `done`, with one log line giving each kind's timings (a warning when one
failed), so a failing warm-up never keeps the edge unready. The task is the owner's (the app's
services) to start and to cancel at shutdown, which aborts the vLLM request in flight.
"""

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from server.backend.model_names import ModelNames
from server.backend.readiness import serving
from server.backend.vllm_client import BULK_PRIORITY, VLLMClient
from server.backend.vllm_realtime.probe import RealtimeBackend, RealtimeProbe
from server.backend.vllm_realtime.words import transcribe_with_words
from server.core import metrics
from server.core.audio import SAMPLE_RATE, encode_wav
from server.core.errors import APIError
from server.core.settings import Settings
from server.core.tasks import cancel_and_wait
from server.core.usage import StreamUsage

log = logging.getLogger("edge.warmup")

POLL_S = 1.0
REQUEST_TIMEOUT_S = 120.0
MAX_TOKENS = 16
CLIP_S = 1.5

Send = Callable[[np.ndarray], Awaitable[object]]
"""One warm-up request of a kind, with this clip (16 kHz float32)."""


@dataclass(frozen=True)
class WarmupKind:
    name: str
    send: Send


@dataclass
class KindResult:
    """How one kind's warm-up went: each answered request's time, and the failure that ended it."""

    name: str
    seconds: list[float] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> str:
        times = ", ".join(f"{s * 1000:.0f}" for s in self.seconds)
        if self.error is None:
            return f"{self.name} {len(self.seconds)} × ({times}) ms"
        answered = f" after {len(self.seconds)} × ({times}) ms" if self.seconds else ""
        return f"{self.name} failed{answered}: {self.error}"


def warmup_clip(index: int, seconds: float = CLIP_S) -> np.ndarray:
    """A short voiced-sounding clip (a pitch and its harmonics under a syllable-rate envelope, over
    faint noise), different for every `index`."""
    rng = np.random.default_rng(index)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 110.0 + 15.0 * index
    voice = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    clip = 0.1 * voice * envelope + 0.005 * rng.standard_normal(len(t))
    return clip.astype(np.float32)


class EdgeRequests:
    """The kinds of request the edge sends vLLM, each sending a clip as the edge would."""

    def __init__(
        self, backend: VLLMClient, models: ModelNames, live: RealtimeProbe, *, streaming: bool, separate_live: bool
    ) -> None:
        """`live` finds the vLLM for live sessions; `streaming`: sessions may stream through it
        (`REALTIME_ENGINE` is not `turns`); `separate_live`: it is not the main vLLM."""
        self._backend = backend
        self._models = models
        self._live = live
        self._streaming = streaming
        self._separate_live = separate_live

    @classmethod
    def of(cls, settings: Settings, backend: VLLMClient, models: ModelNames, live: RealtimeProbe) -> "EdgeRequests":
        return cls(
            backend,
            models,
            live,
            streaming=settings.realtime_engine != "turns",
            separate_live=bool(settings.realtime_vllm_url),
        )

    async def kinds(self) -> list[WarmupKind]:
        """The kinds to warm, decided once vLLM serves (whether a realtime model is there is asked then)."""
        realtime = await self._live.backend()
        kinds = [WarmupKind("transcription", self._transcription), WarmupKind("transcription stream", self._stream)]
        if realtime is None or self._separate_live:
            kinds.append(WarmupKind("chat", self._chat))
        if realtime is not None and self._streaming:
            kinds.append(WarmupKind("realtime", partial(self._realtime, realtime)))
        return kinds

    async def _transcription(self, clip: np.ndarray) -> None:
        model = await self._models.served()
        await self._backend.transcribe(
            encode_wav(clip), task="transcribe", model=model, language=None, temperature=0.0, max_tokens=MAX_TOKENS
        )

    async def _stream(self, clip: np.ndarray) -> None:
        model = await self._models.served()
        deltas = self._backend.transcribe_stream(
            encode_wav(clip),
            task="transcribe",
            model=model,
            language=None,
            temperature=0.0,
            usage=StreamUsage(),
            max_tokens=MAX_TOKENS,
        )
        async with aclosing(deltas) as stream:
            async for _ in stream:
                pass

    async def _chat(self, clip: np.ndarray) -> None:
        audio = {
            "type": "input_audio",
            "input_audio": {"data": base64.b64encode(encode_wav(clip)).decode(), "format": "wav"},
        }
        body = {
            "model": await self._models.served(),
            # As a conversation session's prompt: the instructions, then the turn's audio.
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Answer briefly."}, audio]}],
            "max_completion_tokens": MAX_TOKENS,
        }
        async with aclosing(self._backend.chat_deltas(body, StreamUsage(), priority=BULK_PRIORITY)) as stream:
            async for _ in stream:
                pass

    async def _realtime(self, realtime: RealtimeBackend, clip: np.ndarray) -> None:
        await transcribe_with_words(realtime, clip)


class Warmup:
    """One warm-up: wait until vLLM serves (`wait_ready` raising `APIError` means not yet), then
    send `requests` requests of each kind `plan` gives. `requests` 0: done from the start."""

    def __init__(
        self,
        *,
        requests: int,
        wait_ready: Callable[[], Awaitable[object]],
        plan: Callable[[], Awaitable[Sequence[WarmupKind]]],
        poll_s: float = POLL_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.requests = requests
        self._wait_ready = wait_ready
        self._plan = plan
        self._poll_s = poll_s
        self._request_timeout_s = request_timeout_s
        self.done = requests == 0
        self._task: asyncio.Task[list[KindResult]] | None = None

    @classmethod
    def of(cls, settings: Settings, backend: VLLMClient, models: ModelNames, live: RealtimeProbe) -> "Warmup":
        """The edge's warm-up: `WARMUP_REQUESTS` of each kind `EdgeRequests` sends."""
        return cls(
            requests=settings.warmup_requests,
            wait_ready=partial(serving, backend, models),
            plan=EdgeRequests.of(settings, backend, models, live).kinds,
        )

    def start(self) -> None:
        """Run it in the background (on the running event loop), unless it is done already."""
        if not self.done and self._task is None:
            self._task = asyncio.create_task(self.run(), name="vllm-warmup")

    async def aclose(self) -> None:
        """Cancel it if it still runs, and wait until its request in flight is aborted."""
        if self._task is not None:
            await cancel_and_wait([self._task], shielded=True)

    async def run(self) -> list[KindResult]:
        """Wait for vLLM, warm every kind, log how it went; never raises but for cancellation."""
        if self.done:
            return []
        try:
            await self._until_ready()
            started = time.perf_counter()
            results = [await self._warm(kind) for kind in await self._plan()]
            level = logging.WARNING if any(r.error for r in results) else logging.INFO
            summary = ", ".join(r.summary() for r in results) or "nothing to warm"
            log.log(level, "warm-up: %s; %.1f s in all", summary, time.perf_counter() - started)
            return results
        except Exception:
            log.exception("warm-up failed; the edge is ready without it")
            return []
        finally:
            self.done = True

    async def _until_ready(self) -> None:
        while True:
            try:
                await self._wait_ready()
                return
            except APIError:
                await asyncio.sleep(self._poll_s)

    async def _warm(self, kind: WarmupKind) -> KindResult:
        result = KindResult(kind.name)
        for index in range(self.requests):
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self._request_timeout_s):
                    await kind.send(warmup_clip(index))
            except TimeoutError:
                result.error = f"no answer in {self._request_timeout_s:g} s"
            except Exception as exc:  # any failure of one kind ends that kind only
                result.error = str(exc) or type(exc).__name__
            elapsed = time.perf_counter() - started
            metrics.WARMUP_REQUEST_SECONDS.labels(kind.name, "failed" if result.error else "ok").observe(elapsed)
            if result.error:
                break
            result.seconds.append(elapsed)
        return result
