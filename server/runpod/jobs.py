"""RunPod jobs in, transcripts and OpenAI responses out, through the same code as the HTTP edge.

Two kinds of job input:

- `{"audio": URL | data URL | base64, "task": "transcribe" | "translate", "response_format",
  "language", "stream", ...}`: the other fields are those of OpenAI's transcription request. The
  output is the OpenAI response body of that format (a JSON object, or the text of text/srt/vtt);
  with `stream` the job yields `transcript.text.delta` events, then `transcript.text.done`.
- `{"openai_route": "/v1/...", "openai_input": {...}}`: what RunPod's OpenAI-compatible URL
  (`https://api.runpod.ai/v2/<endpoint id>/openai/v1`) sends. The input goes as the JSON body of a
  request to the edge's own app (`server.runpod.edge_app`), so every `/v1` HTTP route answers as
  at the edge. RunPod's proxy carries JSON only, so the audio of a transcription or translation
  comes as `url`, or as `file` holding a URL or base64 (sent on as `url`). Outputs are the
  routes' response bodies; streams yield server-sent-event text (`data: {...}\\n\\n`, whole
  events), which RunPod relays to the client as it is, as the app sends it.

Errors fail the job with `{"error": ...}`: a message for the first kind, OpenAI's error object for
the second. An error after an OpenAI stream has begun is sent in the stream instead, as the edge
does.
"""

import json
import logging
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from server.api.sse import sse, sse_events
from server.core.errors import APIError, bad_request
from server.core.settings import Settings
from server.files.audio_request import parse_audio_request
from server.files.formats import response_body
from server.files.transcription_flow import TranscriptionFlow
from server.protocol.request_body import bounded_depth
from server.runpod.asgi_call import InProcessResponse
from server.runpod.edge_app import EdgeApp

log = logging.getLogger("runpod.jobs")

# The routes whose audio a job may give as `file` text (a URL or base64): it is sent as `url`.
AUDIO_ROUTES = ("/v1/audio/transcriptions", "/v1/audio/translations")
TASKS = ("transcribe", "translate")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class Jobs:
    """The worker's handler, and the edge app its jobs share (one `Services` for all of them)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.edge = EdgeApp(settings)

    async def aclose(self) -> None:
        await self.edge.aclose()

    def concurrency(self, current: int) -> int:
        """RunPod's `concurrency_modifier`: how many jobs this worker takes at once."""
        return self.settings.max_concurrency

    async def handle(self, job: dict[str, Any]) -> AsyncGenerator[Any, None]:
        """RunPod's handler. Never raises: every failure becomes an `{"error": ...}` output."""
        job_input = job.get("input")
        openai = isinstance(job_input, dict) and "openai_route" in job_input
        started = False
        try:
            # Closed with the job, not when collected: a stream left early ends its request at once.
            async with aclosing(self._outputs(job_input)) as outputs:
                async for output in outputs:
                    started = True
                    yield output
        except Exception as exc:
            error = _reported(exc)
            if error is None:
                log.exception("job %s failed", job.get("id"))
                error = APIError(500, f"Internal error: {type(exc).__name__}: {exc}", code="internal_error")
            else:
                log.info("job %s failed: %s %s", job.get("id"), error.status, error.message)
            yield self._error(error, openai=openai, started=started)

    @staticmethod
    def _error(exc: APIError, *, openai: bool, started: bool) -> Any:
        if not openai:
            return {"error": exc.message}
        return sse(exc.body()) if started else exc.body()

    def _outputs(self, job_input: Any) -> AsyncGenerator[Any, None]:
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
        return self._transcribe(fields, task)

    async def _openai(self, job_input: dict[str, Any]) -> AsyncGenerator[Any, None]:
        route = job_input["openai_route"]
        body = job_input.get("openai_input") or {}
        if not isinstance(body, dict):
            raise bad_request("`openai_input` must be an object.", param="openai_input")
        if not isinstance(route, str) or not route.startswith("/v1/"):
            raise APIError(
                404,
                f"Unknown `openai_route` {route!r}: the worker answers the edge's /v1 HTTP routes.",
                param="openai_route",
                code="unknown_route",
            )
        file_as_url = route.partition("?")[0] in AUDIO_ROUTES and body.get("file") is not None
        if file_as_url:
            if body.get("url") not in (None, ""):
                raise bad_request("Send either `file` or `url`, not both.", param="url")
            body = {k: v for k, v in body.items() if k != "file"} | {"url": self._audio_url(body["file"], "file")}
        async with self.edge.request(route, body) as response:
            if response.status >= 400:
                raise await _route_error(response, url_param="file" if file_as_url else "url")
            if response.media_type == "text/event-stream":
                async with aclosing(sse_events(response.chunks())) as events:
                    async for event in events:
                        yield event
            elif response.media_type == "application/json":
                yield json.loads(await response.read())
            else:
                yield (await response.read()).decode()

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

    async def _transcribe(self, fields: dict[str, Any], task: str) -> AsyncGenerator[Any, None]:
        """A job of the first kind: the transcription flow, its outputs the bodies and events themselves."""
        parsed = parse_audio_request(fields, task=task, url_param="audio")
        services = await self.edge.services()
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
                yield event
        finally:
            await events.aclose()


async def _route_error(response: InProcessResponse, *, url_param: str) -> APIError:
    """A route's error answer as an `APIError`; `url_param` is the job's name for the `url` it was sent."""
    try:
        error = json.loads(await response.read())["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        return APIError(response.status, f"The route answered {response.status}.")
    param = url_param if error.get("param") == "url" else error.get("param")
    return APIError(response.status, message, param=param, code=error.get("code"), type=error.get("type"))


def _reported(exc: BaseException) -> APIError | None:
    """The `APIError` to report for `exc`: itself, or the one a route raised after its response began
    (Starlette then raises its own error, caused by the route's)."""
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, APIError):
            return candidate
    return None
