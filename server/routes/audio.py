"""`POST /v1/audio/transcriptions` and `POST /v1/audio/translations`."""

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from server import metrics
from server.audio_request import parse_audio_request, read_fields
from server.errors import APIError
from server.formats import render
from server.transcription import Timings, TranscriptionOptions

router = APIRouter()
log = logging.getLogger("edge.audio")


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


async def _handle(request: Request, task: str) -> Response:
    state = request.app.state
    started = time.perf_counter()
    timings = Timings()
    route = f"/v1/audio/{'translations' if task == 'translate' else 'transcriptions'}"
    parsed = parse_audio_request(await read_fields(request), task=task)
    opts = TranscriptionOptions(
        task=task,
        model=await state.models.resolve(parsed.model),
        language=parsed.language,
        temperature=parsed.temperature,
        need_segments=parsed.need_segments,
        chunking=parsed.chunking,
    )
    audio = await state.transcriber.load_audio(parsed.source, timings)
    metrics.AUDIO_SECONDS.labels(route).inc(timings.audio_s)

    def finish(status: str) -> None:
        total = time.perf_counter() - started
        for stage, seconds in (("decode", timings.decode_s), ("vad", timings.vad_s), ("backend", timings.backend_s)):
            metrics.STAGE_SECONDS.labels(stage).observe(seconds)
        metrics.STAGE_SECONDS.labels("total").observe(total)
        metrics.BACKEND_CHUNKS.labels(task).inc(timings.chunks)
        log.info(
            "%s %s format=%s stream=%s audio=%.2fs chunks=%d decode=%.1fms vad=%.1fms backend=%.1fms total=%.1fms",
            route, status, parsed.response_format, parsed.stream, timings.audio_s, timings.chunks,
            timings.decode_s * 1e3, timings.vad_s * 1e3, timings.backend_s * 1e3, total * 1e3,
        )

    if not parsed.stream:
        transcript = await state.transcriber.transcribe(audio, opts, timings)
        finish("ok")
        return render(transcript, parsed.response_format, task=task, temperature=parsed.temperature)

    events = state.transcriber.stream(audio, opts, timings)
    # The first event is awaited before answering, so a backend that is down or refuses the
    # request still gets a proper HTTP status rather than an error inside a 200 stream.
    try:
        first = await anext(events)
    except BaseException:
        await events.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        status = "ok"
        try:
            yield _sse(first)
            async for event in events:
                yield _sse(event)
        except APIError as exc:
            status = f"error:{exc.status}"
            yield _sse(exc.body())
        finally:
            with anyio.CancelScope(shield=True):
                await events.aclose()
            finish(status)

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request) -> Response:
    return await _handle(request, "transcribe")


@router.post("/v1/audio/translations")
async def translations(request: Request) -> Response:
    return await _handle(request, "translate")
