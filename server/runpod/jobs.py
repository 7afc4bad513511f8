"""RunPod jobs in, transcripts and OpenAI responses out, through the same code as the HTTP edge.

Two kinds of job input:

- `{"audio": URL | data URL | base64, "task": "transcribe" | "translate", "response_format",
  "language", "stream", ...}`: the other fields are those of OpenAI's transcription request. The
  output is the OpenAI response body of that format (a JSON object, or the text of text/srt/vtt);
  with `stream` the job yields `transcript.text.delta` events, then `transcript.text.done`.
- `{"openai_route": "/v1/...", "openai_input": {...}}`: what RunPod's OpenAI-compatible URL
  (`https://api.runpod.ai/v2/<endpoint id>/openai/v1`) sends. It carries JSON only, so the audio
  of a transcription or translation comes as `url`, or as `file` holding a URL or base64. Outputs
  are the OpenAI response bodies; streams yield server-sent-event text (`data: {...}\\n\\n`), which
  RunPod relays to the client as it is.

Errors fail the job with `{"error": ...}`: a message for the first kind, OpenAI's error object for
the second. An error after an OpenAI stream has begun is sent in the stream instead, as the edge
does.
"""

import base64
import binascii
import codecs
import io
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.datastructures import UploadFile

from server.audio_request import parse_audio_request
from server.chat_audio import prepare_chat
from server.errors import APIError, bad_request, too_large
from server.fetch import SafeFetcher
from server.formats import response_body
from server.model_names import ModelNames
from server.settings import Settings
from server.transcription import Timings, TranscriptionService
from server.vllm_client import VLLMClient
from vad import SileroModel

log = logging.getLogger("runpod.jobs")

AUDIO_ROUTES = {"/v1/audio/transcriptions": "transcribe", "/v1/audio/translations": "translate"}
OTHER_ROUTES = ("/v1/chat/completions", "/v1/models")
TASKS = ("transcribe", "translate")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncGenerator[str, None]:
    """Regroup a byte stream of server-sent events into whole events, as text."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    async for chunk in chunks:
        pending += decoder.decode(chunk)
        *events, pending = pending.split("\n\n")
        for event in events:
            if event.strip():
                yield event + "\n\n"
    pending += decoder.decode(b"", final=True)
    if pending.strip():
        yield pending


class Jobs:
    """The worker's handler and the clients it shares between jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backend = VLLMClient(settings)
        self.fetcher = SafeFetcher(settings)
        self.models = ModelNames(settings, self.backend)
        self.transcriber = TranscriptionService(
            settings, self.backend, self.fetcher, SileroModel(intra_op_threads=settings.vad_intra_op_threads)
        )

    async def aclose(self) -> None:
        await self.fetcher.aclose()
        await self.backend.aclose()

    def concurrency(self, current: int) -> int:
        """RunPod's `concurrency_modifier`: how many jobs this worker takes at once."""
        return self.settings.max_concurrency

    async def handle(self, job: dict[str, Any]) -> AsyncGenerator[Any, None]:
        """RunPod's handler. Never raises: every failure becomes an `{"error": ...}` output."""
        job_input = job.get("input")
        openai = isinstance(job_input, dict) and "openai_route" in job_input
        started = False
        try:
            async for output in self._outputs(job_input):
                started = True
                yield output
        except APIError as exc:
            log.info("job %s failed: %s %s", job.get("id"), exc.status, exc.message)
            yield self._error(exc, openai=openai, started=started)
        except Exception as exc:
            log.exception("job %s failed", job.get("id"))
            error = APIError(500, f"Internal error: {type(exc).__name__}: {exc}", code="internal_error")
            yield self._error(error, openai=openai, started=started)

    @staticmethod
    def _error(exc: APIError, *, openai: bool, started: bool) -> Any:
        if not openai:
            return {"error": exc.message}
        return sse(exc.body()) if started else exc.body()

    def _outputs(self, job_input: Any) -> AsyncIterator[Any]:
        if not isinstance(job_input, dict):
            raise bad_request("The job `input` must be an object.", param="input")
        if "openai_route" in job_input:
            return self._openai(job_input)
        task = job_input.get("task") or "transcribe"
        if task not in TASKS:
            raise bad_request(f"`task` must be transcribe or translate, not {task!r}.", param="task")
        if job_input.get("audio") in (None, ""):
            raise bad_request(
                "No audio: send `audio` as an http(s) URL, a data: URL or base64-encoded audio.",
                param="audio",
                code="missing_audio",
            )
        fields = {k: v for k, v in job_input.items() if k not in ("audio", "task", "file", "url")}
        fields.update(self._audio_field(job_input["audio"], "audio"))
        return self._transcribe(fields, task, events_as_sse=False)

    def _openai(self, job_input: dict[str, Any]) -> AsyncIterator[Any]:
        route = job_input["openai_route"]
        body = job_input.get("openai_input") or {}
        if not isinstance(body, dict):
            raise bad_request("`openai_input` must be an object.", param="openai_input")
        if route in AUDIO_ROUTES:
            fields = dict(body)
            if isinstance(fields.get("file"), str):
                audio = self._audio_field(fields.pop("file"), "file")
                if "url" in audio and fields.get("url") not in (None, ""):
                    raise bad_request("Send either `file` or `url`, not both.", param="url")
                fields.update(audio)
            return self._transcribe(fields, AUDIO_ROUTES[route], events_as_sse=True)
        if route == "/v1/chat/completions":
            return self._chat(body)
        if route == "/v1/models":
            return self._list_models()
        raise APIError(
            404,
            f"Unknown `openai_route` {route!r}: use one of {', '.join([*AUDIO_ROUTES, *OTHER_ROUTES])}.",
            param="openai_route",
            code="unknown_route",
        )

    def _audio_field(self, value: Any, param: str) -> dict[str, Any]:
        """Audio given as text, as the field `parse_audio_request` reads: `url`, or `file` (decoded base64)."""
        if not isinstance(value, str):
            raise bad_request(f"`{param}` must be a string: a URL, a data: URL or base64.", param=param)
        value = value.strip()
        if _URL.match(value):
            return {"url": value}
        payload = "".join(value.split())
        max_bytes = int(self.settings.max_upload_mb * 1024 * 1024)
        if len(payload) // 4 * 3 > max_bytes:
            raise too_large(f"The audio is larger than the maximum of {self.settings.max_upload_mb:g} MB.", param=param)
        try:
            data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
        except (binascii.Error, ValueError):
            data = b""
        if not data:
            raise bad_request(
                f"`{param}` is neither a URL (http, https or data:) nor valid base64-encoded audio.",
                param=param,
                code="invalid_audio",
            )
        return {"file": UploadFile(io.BytesIO(data), filename=None)}

    async def _transcribe(self, fields: dict[str, Any], task: str, *, events_as_sse: bool) -> AsyncGenerator[Any, None]:
        started = time.perf_counter()
        parsed = parse_audio_request(fields, task=task)
        opts = parsed.options(task, await self.models.resolve(parsed.model))
        timings = Timings()
        audio = await self.transcriber.load_audio(parsed.source, timings)
        if not parsed.stream:
            transcript = await self.transcriber.transcribe(audio, opts, timings)
            yield response_body(transcript, parsed.response_format, task=task, temperature=parsed.temperature)
        else:
            events = self.transcriber.stream(audio, opts, timings)
            try:
                async for event in events:
                    yield sse(event) if events_as_sse else event
            finally:
                await events.aclose()
        log.info(
            "%s format=%s stream=%s audio=%.2fs chunks=%d decode=%.1fms vad=%.1fms backend=%.1fms total=%.1fms",
            task,
            parsed.response_format,
            parsed.stream,
            timings.audio_s,
            timings.chunks,
            timings.decode_s * 1e3,
            timings.vad_s * 1e3,
            timings.backend_s * 1e3,
            (time.perf_counter() - started) * 1e3,
        )

    async def _chat(self, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        await prepare_chat(body, models=self.models, fetcher=self.fetcher, max_audio_s=self.settings.max_audio_s)
        if not body.get("stream"):
            yield await self.backend.chat(body)
            return
        chunks = self.backend.chat_stream(body)
        try:
            async for event in sse_events(chunks):
                yield event
        finally:
            await chunks.aclose()

    async def _list_models(self) -> AsyncGenerator[Any, None]:
        yield await self.backend.models()
