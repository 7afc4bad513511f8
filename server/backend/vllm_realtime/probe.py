"""Whether a vLLM serves a realtime-capable model, and how long one generation may run.

vLLM registers `/v1/realtime` only when the model supports its `realtime` task (Voxtral Realtime);
its `/v1/models` lists each served model's `max_model_len`. `RealtimeProbe` keeps the answer for a
while, so the edge's users of the realtime backend (live sessions, file word timestamps) share one
probe instead of asking vLLM per session or request.
"""

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx

from server.backend.vllm_realtime.connection import RealtimeConnection
from server.backend.vllm_realtime.errors import RealtimeBackendError
from server.core.settings import Settings

log = logging.getLogger("edge.vllm_realtime")


@dataclass(frozen=True)
class RealtimeBackend:
    """A vLLM that streams: its OpenAI base URL, served model name and `max_model_len`."""

    url: str
    model: str
    max_model_len: int
    api_key: str | None = None


async def probe_realtime(
    backend_url: str, *, model: str | None = None, api_key: str | None = None, timeout_s: float = 10.0
) -> RealtimeBackend | None:
    """The realtime backend at `backend_url`, or None if it serves no `/v1/realtime`.

    `model` defaults to the first model vLLM lists. Unreachable vLLMs count as not realtime.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base = backend_url.rstrip("/")
    base = base if base.endswith("/v1") else base + "/v1"
    try:
        async with httpx.AsyncClient(timeout=timeout_s, headers=headers) as client:
            response = await client.get(f"{base}/models")
            response.raise_for_status()
            models = response.json()["data"]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        log.info("no realtime backend at %s: %s", backend_url, exc)
        return None
    entry = next((m for m in models if model is None or m.get("id") == model), None)
    if entry is None:
        return None
    try:
        connection = await RealtimeConnection.open(base, entry["id"], api_key=api_key, timeout_s=timeout_s)
    except RealtimeBackendError as exc:
        log.info("no /v1/realtime at %s: %s", backend_url, exc)
        return None
    await connection.aclose()
    return RealtimeBackend(
        url=base, model=entry["id"], max_model_len=int(entry.get("max_model_len") or 2048), api_key=api_key
    )


class RealtimeProbe:
    """The realtime backend at one vLLM (`probe_realtime`), asked at most every `RECHECK_S`.

    A missing backend is kept as long as a found one, so a vLLM started (or swapped) after the edge
    is found within `RECHECK_S`, and one that serves no realtime model is not asked per request.
    """

    RECHECK_S = 30.0

    def __init__(self, backend_url: str, *, model: str | None = None, api_key: str | None = None) -> None:
        self.backend_url = backend_url
        self._model = model
        self._api_key = api_key
        self._backend: RealtimeBackend | None = None
        self._checked_at: float | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def of(cls, settings: Settings) -> "RealtimeProbe":
        """The probe of the vLLM for live sessions: `REALTIME_VLLM_URL` (its first model), else the
        main vLLM (its served model)."""
        if settings.realtime_vllm_url:
            return cls(settings.realtime_vllm_url, api_key=settings.vllm_api_key)
        return cls(settings.backend_url, model=settings.served_model_name, api_key=settings.vllm_api_key)

    async def backend(self) -> RealtimeBackend | None:
        """The realtime backend, or None if the vLLM serves none (or did not answer)."""
        async with self._lock:
            if self._checked_at is None or time.monotonic() - self._checked_at > self.RECHECK_S:
                self._backend = await probe_realtime(self.backend_url, model=self._model, api_key=self._api_key)
                self._checked_at = time.monotonic()
            return self._backend
