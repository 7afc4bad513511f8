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

import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from server.audio_request import parse_audio_request
from server.chat_audio import parse_chat, prepare_chat
from server.errors import APIError, bad_request
from server.formats import response_body
from server.request_body import bounded_depth
from server.services import Services
from server.settings import Settings
from server.sse import sse, sse_events
from server.transcription_flow import TranscriptionFlow

log = logging.getLogger("runpod.jobs")

AUDIO_ROUTES = {"/v1/audio/transcriptions": "transcribe", "/v1/audio/translations": "translate"}
OTHER_ROUTES = ("/v1/chat/completions", "/v1/models")
TASKS = ("transcribe", "translate")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class Jobs:
    """The worker's handler and the services it shares between jobs (the edge's own `Services`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services = Services.build(settings)

    async def aclose(self) -> None:
        await self.services.aclose()

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
        bounded_depth(job_input)
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
        fields["url"] = self._audio_url(job_input["audio"], "audio")
        return self._transcribe(fields, task, url_param="audio", events_as_sse=False)

    def _openai(self, job_input: dict[str, Any]) -> AsyncIterator[Any]:
        route = job_input["openai_route"]
        body = job_input.get("openai_input") or {}
        if not isinstance(body, dict):
            raise bad_request("`openai_input` must be an object.", param="openai_input")
        if route in AUDIO_ROUTES:
            fields, url_param = dict(body), "url"
            if fields.get("file") is not None:
                if fields.get("url") not in (None, ""):
                    raise bad_request("Send either `file` or `url`, not both.", param="url")
                fields["url"], url_param = self._audio_url(fields.pop("file"), "file"), "file"
            return self._transcribe(fields, AUDIO_ROUTES[route], url_param=url_param, events_as_sse=True)
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

    @staticmethod
    def _audio_url(value: Any, param: str) -> str:
        """Audio given as text (a URL, or base64 that becomes a `data:` URL) as the request's `url`."""
        if not isinstance(value, str):
            raise bad_request(f"`{param}` must be a string: a URL, a data: URL or base64.", param=param)
        value = value.strip()
        if _URL.match(value):
            return value
        payload = "".join(value.split())
        if not _BASE64.fullmatch(payload):
            raise bad_request(
                f"`{param}` is neither a URL (http, https or data:) nor valid base64-encoded audio.",
                param=param,
                code="invalid_audio",
            )
        return "data:application/octet-stream;base64," + payload

    async def _transcribe(
        self, fields: dict[str, Any], task: str, *, url_param: str, events_as_sse: bool
    ) -> AsyncGenerator[Any, None]:
        parsed = parse_audio_request(fields, task=task, url_param=url_param)
        services = self.services
        flow = await TranscriptionFlow.start(
            parsed,
            task=task,
            label=f"runpod:{task}",
            models=services.models,
            transcriber=services.transcriber,
            realtime=services.realtime_engines.probe,
        )
        if not parsed.stream:
            transcript = await flow.transcript()
            yield response_body(transcript, parsed.response_format, task=task, temperature=parsed.temperature)
            return
        events = flow.events()
        try:
            async for event in events:
                yield sse(event) if events_as_sse else event
        finally:
            await events.aclose()

    async def _chat(self, fields: dict[str, Any]) -> AsyncGenerator[Any, None]:
        body, services = parse_chat(fields), self.services
        await prepare_chat(
            body, models=services.models, fetcher=services.fetcher, max_audio_s=self.settings.max_audio_s
        )
        if not body.get("stream"):
            yield await services.backend.chat(body)
            return
        chunks = services.backend.chat_stream(body)
        try:
            async for event in sse_events(chunks):
                yield event
        finally:
            await chunks.aclose()

    async def _list_models(self) -> AsyncGenerator[Any, None]:
        yield await self.services.backend.models()
