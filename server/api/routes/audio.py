"""`POST /v1/audio/transcriptions` and `POST /v1/audio/translations`: HTTP in and out of the
transcription flow (`server.files.transcription_flow`), which the RunPod jobs share."""

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from server.api.services import services_of
from server.api.sse import sse
from server.core.errors import APIError
from server.core.tasks import cancel_and_wait
from server.files.audio_request import parse_audio_request
from server.files.formats import render
from server.files.transcription_flow import TranscriptionFlow
from server.protocol.audio import AudioRequestBody, AudioRequestForm
from server.protocol.request_body import read_fields
from server.protocol.schema import request_body

router = APIRouter()
T = TypeVar("T")
BODY = request_body(
    {
        "multipart/form-data": AudioRequestForm,
        "application/x-www-form-urlencoded": AudioRequestBody,
        "application/json": AudioRequestBody,
    }
)


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
        await cancel_and_wait([watcher] if job.done() else [watcher, job], shielded=True)
    if job.cancelled():
        raise APIError(499, "The client closed the request.", code="client_closed_request")
    return job.result()


async def _handle(request: Request, task: str) -> Response:
    parsed = parse_audio_request(await read_fields(request), task=task)
    services = services_of(request)
    flow = await TranscriptionFlow.start(
        parsed,
        task=task,
        label=request.url.path,
        models=services.models,
        transcriber=services.transcriber,
        realtime=services.realtime_engines.probe,
    )
    if not parsed.stream:
        transcript = await flow.transcript(lambda work: _unless_client_leaves(request, work))
        return render(transcript, parsed.response_format, task=task, temperature=parsed.temperature)

    events = flow.events()
    # The first event is awaited before answering, so a backend that is down or refuses the
    # request still gets a proper HTTP status rather than an error inside a 200 stream; a client
    # that leaves meanwhile (its chunks waiting for places behind other files) is let go at once.

    async def first_event() -> dict[str, Any]:
        return await anext(events)

    try:
        first = await _unless_client_leaves(request, first_event())
    except BaseException:
        await events.aclose()
        raise

    async def body() -> AsyncIterator[str]:
        try:
            yield sse(first)
            async for event in events:
                yield sse(event)
        except APIError as exc:
            yield sse(exc.body())
        finally:
            with anyio.CancelScope(shield=True):
                await events.aclose()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/v1/audio/transcriptions", openapi_extra=BODY)
async def transcriptions(request: Request) -> Response:
    """Transcribe audio (OpenAI's API; `url` may replace `file`)."""
    return await _handle(request, "transcribe")


@router.post("/v1/audio/translations", openapi_extra=BODY)
async def translations(request: Request) -> Response:
    """Translate audio into English text (OpenAI's API; `url` may replace `file`)."""
    return await _handle(request, "translate")
