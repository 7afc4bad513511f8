"""The edge's only door to vLLM: an httpx client for its OpenAI-compatible API.

Failures are translated once, here, into `APIError`s with the status a client should see:
vLLM unreachable → 503 with `Retry-After`; vLLM timing out → 504; vLLM failing (5xx or a broken
stream) → 502; vLLM refusing a request (4xx) → the same status with vLLM's own message, except
vLLM refusing the edge's own key (401/403): that is this server's configuration error, not the
client's, so it is a 503 `BackendAuthFailed` naming `VLLM_API_KEY` (logged once, not per request).

Chat requests carry a vLLM `priority` (lower values are scheduled first, when vLLM runs with
`--scheduling-policy priority`): live ones (realtime conversation replies) `LIVE_PRIORITY`, the rest
`BULK_PRIORITY`. vLLM's transcription endpoints take no priority, so transcriptions, live or not,
get vLLM's default 0, between the two; file work is kept apart by the edge's own budget
(`server.files.file_scheduler`). vLLM 0.32 without the priority policy ignores priorities; older
versions refuse non-zero ones with a 400, so the first such refusal makes the client retry
without and send none from then on: a priority never fails a request.
"""

import base64
import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from server.core.errors import APIError
from server.core.settings import Settings
from server.core.usage import StreamUsage

log = logging.getLogger("edge.backend")

RETRY_AFTER_S = "5"
LIVE_PRIORITY = -10
BULK_PRIORITY = 10
MAX_CLIENT_PRIORITY = 2**31 - 1


@dataclass(frozen=True)
class ChatDelta:
    """One streamed chat chunk's first choice: its text, its tool call pieces (vLLM's
    `delta.tool_calls`, OpenAI's shape: `index`, then `id` and `function.name` once, and
    `function.arguments` in pieces) and, in the last one, why it finished."""

    text: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()
    finish_reason: str | None = None


@dataclass
class TranscriptionResult:
    """What vLLM returned for one audio chunk."""

    text: str


def _error_from_response(status: int, body: bytes) -> APIError:
    """Turn a vLLM error response into the error the client sees."""
    try:
        err = json.loads(body).get("error", {})
        message = err.get("message") or body.decode(errors="replace")
        param = err.get("param")
    except (ValueError, AttributeError):
        message, param = body.decode(errors="replace")[:500] or f"HTTP {status}", None
    if status >= 500:
        return APIError(502, f"The speech backend failed: {message}", code="backend_error")
    code = "model_not_found" if status == 404 else "backend_rejected"
    return APIError(status, message, param=param, code=code)


class BackendAuthFailed(APIError):
    """vLLM refused the key this server sends it (`VLLM_API_KEY`): 401 refused, 403 not allowed.

    Passing vLLM's 401 through would tell a client that its own key is wrong; this 503 names the
    setting an operator must fix. `backend_status` is vLLM's answer.
    """

    def __init__(self, url: str, backend_status: int, *, key_sent: bool) -> None:
        if not key_sent:
            problem = f"VLLM_API_KEY is not set, and the vLLM at {url} requires a key ({backend_status})"
        elif backend_status == 403:
            problem = f"VLLM_API_KEY is not allowed by the vLLM at {url} (403)"
        else:
            problem = f"VLLM_API_KEY was refused by the vLLM at {url} ({backend_status})"
        super().__init__(503, f"{problem}: a configuration error of this server.", code="backend_auth_failed")
        self.backend_status = backend_status


AUTH_REFUSALS = (401, 403)
KEEPALIVE_S = 2.0


class VLLMClient:
    """Async client for vLLM's `/v1` API, shared by every request of the app."""

    def __init__(self, settings: Settings) -> None:
        headers = {"Authorization": f"Bearer {settings.vllm_api_key}"} if settings.vllm_api_key else {}
        timeout = httpx.Timeout(settings.backend_timeout_s, connect=settings.backend_connect_timeout_s)
        self.base_url = settings.backend_url
        self.max_output_tokens = settings.max_output_tokens
        self.json_audio = settings.json_audio_upload
        self.accepts_priority = True
        """False once the backend refused a request priority; none is sent from then on."""
        self.key_sent = bool(settings.vllm_api_key)
        self.auth_failure: str | None = None
        """The last `BackendAuthFailed` message, until vLLM accepts the key again (it is logged once)."""
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            # Idle connections are dropped well before vLLM's own keep-alive (5 s) closes them: at
            # equal timeouts a request sent as the server closes fails ("Server disconnected").
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64, keepalive_expiry=KEEPALIVE_S),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            response = await self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            raise APIError(504, "The speech backend timed out.", code="backend_timeout") from exc
        except httpx.TransportError as exc:
            raise APIError(
                503,
                f"The speech backend is unreachable ({type(exc).__name__}).",
                code="backend_unavailable",
                headers={"Retry-After": RETRY_AFTER_S},
            ) from exc
        if response.status_code in AUTH_REFUSALS:
            await response.aclose()
            raise self._auth_failed(response.status_code)
        if self.auth_failure is not None:
            self.auth_failure = None
            log.info("the vLLM at %s accepts VLLM_API_KEY again", self.base_url)
        if response.status_code >= 400:
            body = await response.aread()
            await response.aclose()
            raise _error_from_response(response.status_code, body)
        return response

    def _auth_failed(self, backend_status: int) -> BackendAuthFailed:
        """The error for vLLM refusing the key; logged when it is new (a readiness probe polls
        every few seconds, and every request would meet it too)."""
        error = BackendAuthFailed(self.base_url, backend_status, key_sent=self.key_sent)
        if error.message != self.auth_failure:
            self.auth_failure = error.message
            log.error("%s", error.message)
        return error

    def _audio_request(
        self,
        wav: bytes,
        *,
        task: str,
        model: str,
        language: str | None,
        temperature: float,
        stream: bool,
        max_tokens: int | None,
    ) -> httpx.Request:
        """A transcription request for one WAV chunk: multipart for vLLM, or JSON for a backend
        behind a JSON-only proxy (RunPod's OpenAI URL), with the audio as a `data:` URL."""
        fields: dict[str, str] = {"model": model, "response_format": "json", "temperature": str(temperature)}
        if language:
            fields["language"] = language
        if limit := max_tokens or self.max_output_tokens:
            fields["max_completion_tokens"] = str(limit)
        if stream:
            fields.update(stream="true", stream_include_usage="true")
        url = f"/audio/{_route(task)}"
        if self.json_audio:
            fields["url"] = "data:audio/wav;base64," + base64.b64encode(wav).decode()
            return self._http.build_request("POST", url, json=fields)
        return self._http.build_request("POST", url, data=fields, files={"file": ("audio.wav", wav, "audio/wav")})

    async def transcribe(
        self,
        wav: bytes,
        *,
        task: str,
        model: str,
        language: str | None,
        temperature: float,
        max_tokens: int | None = None,
    ) -> TranscriptionResult:
        """Transcribe (or translate) one WAV chunk; `max_tokens` caps it instead of `MAX_OUTPUT_TOKENS`."""
        request = self._audio_request(
            wav, task=task, model=model, language=language, temperature=temperature, stream=False, max_tokens=max_tokens
        )
        response = await self._send(request)
        try:
            body = response.json()
            return TranscriptionResult(text=body["text"])
        except (ValueError, KeyError, TypeError) as exc:
            raise APIError(502, "The speech backend sent an unreadable transcription.", code="backend_error") from exc

    async def transcribe_stream(
        self,
        wav: bytes,
        *,
        task: str,
        model: str,
        language: str | None,
        temperature: float,
        usage: StreamUsage,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[str, None]:
        """Yield text deltas of one chunk as vLLM streams them; token counts are added to `usage`.

        Closing the iterator early closes the HTTP stream, which makes vLLM abort the request.
        """
        request = self._audio_request(
            wav, task=task, model=model, language=language, temperature=temperature, stream=True, max_tokens=max_tokens
        )
        async with aclosing(_text_deltas(await self._send(request, stream=True), usage)) as deltas:
            async for delta in deltas:
                yield delta

    async def chat_deltas(
        self, body: dict[str, Any], usage: StreamUsage, *, priority: int
    ) -> AsyncGenerator[ChatDelta, None]:
        """Yield the first choice's deltas of a streamed chat completion (text, tool call pieces,
        the finish reason); token counts are added to `usage`.

        `body` gets `stream` and usage reporting set. Closing the iterator early aborts the request.
        """
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        response = await self._send_chat(body, priority=priority, stream=True)
        async with aclosing(_chat_deltas(response, usage)) as deltas:
            async for delta in deltas:
                yield delta

    async def chat(self, body: dict[str, Any], *, priority: int = BULK_PRIORITY) -> dict[str, Any]:
        response = await self._send_chat(body, priority=priority, stream=False)
        return response.json()

    async def chat_stream(self, body: dict[str, Any], *, priority: int = BULK_PRIORITY) -> AsyncGenerator[bytes, None]:
        """Relay vLLM's chat SSE stream chunk by chunk, as bytes."""
        response = await self._send_chat(body, priority=priority, stream=True)
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.TransportError as exc:
            raise APIError(502, "The speech backend broke off the stream.", code="backend_error") from exc
        finally:
            await close_shielded(response)

    async def _send_chat(self, body: dict[str, Any], *, priority: int, stream: bool) -> httpx.Response:
        """POST a chat completion with `priority` (a client's own, if it is not ahead of that, is
        kept); without one if the backend refuses priorities."""
        if self.accepts_priority:
            client_priority = body.get("priority")
            keep = isinstance(client_priority, int) and priority <= client_priority <= MAX_CLIENT_PRIORITY
            prioritised = {**body, "priority": client_priority if keep else priority}
            try:
                return await self._send(
                    self._http.build_request("POST", "/chat/completions", json=prioritised), stream=stream
                )
            except APIError as exc:
                if exc.status != 400 or "priority" not in exc.message.lower():
                    raise
                self.accepts_priority = False
                log.warning("the backend refuses request priorities (%s); sending none from now on", exc.message)
        plain = {key: value for key, value in body.items() if key != "priority"}
        return await self._send(self._http.build_request("POST", "/chat/completions", json=plain), stream=stream)

    async def models(self) -> dict[str, Any]:
        response = await self._send(self._http.build_request("GET", "/models"))
        return response.json()


async def close_shielded(response: httpx.Response) -> None:
    """Close a streamed response even while the caller is being cancelled.

    Cancellation (a client that went away) is exactly when the stream must close: vLLM aborts a
    request when its connection closes, and an unclosed one keeps generating for nobody.
    """
    with anyio.CancelScope(shield=True):
        await response.aclose()


def _route(task: str) -> str:
    return "translations" if task == "translate" else "transcriptions"


async def _backend_events(response: httpx.Response, usage: StreamUsage) -> AsyncGenerator[dict[str, Any], None]:
    """The events of a streamed completion, with its failures as `APIError`s and its token counts
    added to `usage`; closes the response."""
    try:
        async for event in _sse_events(response):
            if "error" in event:
                message = event["error"].get("message") if isinstance(event["error"], dict) else event["error"]
                raise APIError(502, f"The speech backend failed: {message}", code="backend_error")
            yield event
            if counts := event.get("usage"):
                usage.input_tokens += counts.get("prompt_tokens", counts.get("input_tokens", 0))
                usage.output_tokens += counts.get("completion_tokens", counts.get("output_tokens", 0))
    except httpx.TimeoutException as exc:
        raise APIError(504, "The speech backend timed out.", code="backend_timeout") from exc
    except httpx.TransportError as exc:
        raise APIError(502, "The speech backend broke off the stream.", code="backend_error") from exc
    finally:
        await close_shielded(response)


async def _text_deltas(response: httpx.Response, usage: StreamUsage) -> AsyncGenerator[str, None]:
    """Text deltas of a streamed completion; closes the response.

    Reads vLLM's chunk format (transcription and chat) and OpenAI's `transcript.text.*` events,
    which a backend that is itself this edge or its RunPod worker sends.
    """
    async with aclosing(_backend_events(response, usage)) as events:
        async for event in events:
            for choice in event.get("choices") or []:
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    yield delta
            if event.get("type") == "transcript.text.delta" and event.get("delta"):
                yield event["delta"]


async def _chat_deltas(response: httpx.Response, usage: StreamUsage) -> AsyncGenerator[ChatDelta, None]:
    """The first choice's deltas of a streamed chat completion; closes the response."""
    async with aclosing(_backend_events(response, usage)) as events:
        async for event in events:
            for choice in (event.get("choices") or [])[:1]:
                delta = choice.get("delta") or {}
                calls = delta.get("tool_calls") or ()
                if delta.get("content") or calls or choice.get("finish_reason"):
                    yield ChatDelta(delta.get("content") or "", tuple(calls), choice.get("finish_reason"))


async def _sse_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """Parse `data:` lines of a server-sent event stream until `[DONE]`."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            yield json.loads(payload)
        except ValueError as exc:
            raise APIError(502, "The speech backend sent an unreadable stream.", code="backend_error") from exc
