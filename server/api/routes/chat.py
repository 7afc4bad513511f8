"""`POST /v1/chat/completions`: passed through to vLLM, with audio URLs fetched by the edge.

The body is prepared by `server.api.chat_audio` (model name resolved, `audio_url` parts fetched safely
and sent as `input_audio`), so vLLM never fetches URLs itself.
"""

import logging
import time
from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from server.api.chat_audio import parse_chat, prepare_chat
from server.api.services import services_of
from server.protocol.chat import ChatCompletionRequest
from server.protocol.request_body import read_json_object
from server.protocol.schema import request_body

router = APIRouter()
log = logging.getLogger("edge.chat")


@router.post("/v1/chat/completions", openapi_extra=request_body({"application/json": ChatCompletionRequest}))
async def chat_completions(request: Request) -> Response:
    """A chat completion from vLLM (OpenAI's API), with audio content parts fetched by the edge."""
    started = time.perf_counter()
    body = parse_chat(await read_json_object(request))
    services = services_of(request)
    audios = await prepare_chat(
        body, models=services.models, fetcher=services.fetcher, max_audio_s=services.settings.max_audio_s
    )
    backend = services.backend
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
            with anyio.CancelScope(shield=True):
                await chunks.aclose()
            log.info(
                "/v1/chat/completions stream audios=%d total=%.1fms", audios, (time.perf_counter() - started) * 1e3
            )

    return StreamingResponse(relay(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
