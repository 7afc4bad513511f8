"""Voice-assistant replies: the turn's audio goes to vLLM's chat endpoint with the conversation so
far (earlier user turns as their transcripts, earlier replies as text), and the reply streams back.

Voxtral's tokenizer refuses a system prompt next to audio, so the instructions travel as a text
part of the final user message, ahead of the audio.
"""

import asyncio
import base64
import logging
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import numpy as np

from server.backend.model_names import ModelNames
from server.backend.vllm_client import LIVE_PRIORITY, VLLMClient
from server.core.audio import encode_wav
from server.core.errors import APIError
from server.core.usage import StreamUsage
from server.realtime.config import Assistant
from server.realtime.events import Event, ResponseCreated, ResponseDelta, ResponseDone
from server.realtime.ids import new_id

log = logging.getLogger("edge.realtime")


class Conversation:
    """The session's history as chat messages."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def add(self, role: str, text: str) -> None:
        if text.strip():
            self.messages.append({"role": role, "content": text})

    def request(self, audio: np.ndarray, settings: Assistant, default_max_tokens: int | None) -> dict[str, Any]:
        """A chat request about `audio`, the user's latest turn (model filled in by the caller)."""
        wav = base64.b64encode(encode_wav(audio)).decode()
        content: list[dict[str, Any]] = []
        if settings.instructions:
            content.append({"type": "text", "text": settings.instructions})
        content.append({"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}})
        body: dict[str, Any] = {
            "messages": [*self.messages, {"role": "user", "content": content}],
            "temperature": settings.temperature,
        }
        max_tokens = settings.max_output_tokens or default_max_tokens
        if max_tokens:
            body["max_completion_tokens"] = max_tokens
        return body


class Reply:
    """One streamed assistant reply. `cancel()` reports it cancelled at once and aborts the request."""

    def __init__(
        self,
        body: dict[str, Any],
        *,
        backend: VLLMClient,
        models: ModelNames,
        emit: Callable[[Event], None],
        on_done: Callable[[str], None],
    ) -> None:
        self.response_id = new_id("resp")
        self.item_id = new_id("item")
        self._body = body
        self._backend = backend
        self._models = models
        self._emit = emit
        self._on_done = on_done
        self._parts: list[str] = []
        self._usage = StreamUsage()
        self._finished = False
        emit(ResponseCreated(self.response_id))
        self.task = asyncio.create_task(self._run(), name=f"realtime-reply-{self.response_id}")

    async def _run(self) -> None:
        try:
            body = {**self._body, "model": await self._models.served()}
            async with aclosing(self._backend.chat_text_stream(body, self._usage, priority=LIVE_PRIORITY)) as deltas:
                async for delta in deltas:
                    self._parts.append(delta)
                    self._emit(ResponseDelta(self.response_id, self.item_id, delta))
        except APIError as exc:
            log.warning("assistant reply %s failed: %s", self.response_id, exc.message)
            self._finish("failed", exc.message)
            return
        self._finish("completed")

    def cancel(self) -> None:
        if not self._finished:
            self._finish("cancelled")
            self.task.cancel()

    def _finish(self, status: str, error: str | None = None) -> None:
        self._finished = True
        text = "".join(self._parts)
        self._emit(ResponseDone(self.response_id, self.item_id, status, text, self._usage, error))
        self._on_done(text)
