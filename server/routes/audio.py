"""`POST /v1/audio/transcriptions` and `POST /v1/audio/translations`."""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from server import metrics
from server.audio_request import parse_audio_request, read_fields
from server.errors import APIError
from server.formats import render
from server.services import services
from server.transcription import Timings, cancel_all

router = APIRouter()
T = TypeVar("T")
log = logging.getLogger("edge.audio")


def _sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


async def _until_disconnect(request: Request) -> None:
    """Return when the client hangs up (its body has been read, so nothing else can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run `work`, cancelling it (and with it its vLLM requests) if the client disconnects.

    A long file's chunks would otherwise keep vLLM busy for a client that is no longer there.
    """
    job = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_all([watcher] if job.done() else [watcher, job])
    if job.cancelled():
        raise APIError(499, "The client closed the request.", code="client_closed_request")
    return job.result()


async def _handle(request: Request, task: str) -> Response:
    state = services(request)
    started = time.perf_counter()
    timings = Timings()
    route = f"/v1/audio/{'translations' if task == 'translate' else 'transcriptions'}"
    parsed = parse_audio_request(await read_fields(request), task=task)
    opts = parsed.options(task, await state.models.resolve(parsed.model))
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
            route,
            status,
            parsed.response_format,
            parsed.stream,
            timings.audio_s,
            timings.chunks,
            timings.decode_s * 1e3,
            timings.vad_s * 1e3,
            timings.backend_s * 1e3,
            total * 1e3,
        )

    if not parsed.stream:
        try:
            transcript = await _unless_client_leaves(request, state.transcriber.transcribe(audio, opts, timings))
        except APIError as exc:
            finish(f"error:{exc.status}")
            raise
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
