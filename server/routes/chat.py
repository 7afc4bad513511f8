"""`POST /v1/chat/completions`: passed through to vLLM, with audio URLs fetched by the edge.

vLLM would fetch an `audio_url` itself, from wherever it points. The edge fetches http(s) and
`data:` audio URLs with its safe fetcher instead and hands vLLM the decoded audio as
`input_audio` (16 kHz WAV), so vLLM never reaches out to arbitrary addresses.
"""

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from server.audio import decode_audio, encode_wav
from server.errors import APIError, bad_request

router = APIRouter()
log = logging.getLogger("edge.chat")


async def _inline_audio(part: dict[str, Any], request: Request) -> dict[str, Any]:
    """An `audio_url` content part rewritten as an `input_audio` part holding the audio itself."""
    state = request.app.state
    ref = part.get("audio_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise bad_request("An `audio_url` content part needs a `url`.", param="messages")
    media = await state.fetcher.fetch(url)
    try:
        audio = await asyncio.to_thread(decode_audio, media.file, max_duration_s=state.settings.max_audio_s)
    finally:
        media.file.close()
    data = base64.b64encode(encode_wav(audio)).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


async def _prepare(body: dict[str, Any], request: Request) -> int:
    """Resolve the model name and inline every audio URL; return how many audios there are."""
    body["model"] = await request.app.state.models.resolve(body.get("model"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages` must be a non-empty list.", param="messages")
    audios = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for i, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "audio_url":
                content[i] = await _inline_audio(part, request)
            if isinstance(content[i], dict) and content[i].get("type") == "input_audio":
                audios += 1
    return audios


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    started = time.perf_counter()
    try:
        body = await request.json()
    except ValueError:
        raise APIError(422, "The JSON body is malformed.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(422, "The JSON body must be an object.", code="invalid_json")
    audios = await _prepare(body, request)
    backend = request.app.state.backend
    if not body.get("stream"):
        result = await backend.chat(body)
        log.info("/v1/chat/completions ok audios=%d total=%.1fms", audios, (time.perf_counter() - started) * 1e3)
        return JSONResponse(result)

    chunks = backend.chat_stream(body)
    try:
        first = await anext(chunks)
    except BaseException:
        await chunks.aclose()
        raise

    async def relay() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()
            log.info(
                "/v1/chat/completions stream audios=%d total=%.1fms", audios, (time.perf_counter() - started) * 1e3
            )

    return StreamingResponse(relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
