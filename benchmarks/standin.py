"""A zero-cost stand-in for vLLM: a benchmark instrument, never a substitute for vLLM in tests.

It answers every transcription at once with a fixed text, so a benchmark against it measures the
edge alone. It speaks just enough of vLLM's API for the edge: `/health`, `/v1/models`,
`/v1/audio/transcriptions` and `/translations` (JSON, or with `stream=true` vLLM's
`transcription.chunk` server-sent events and a usage chunk) and `/v1/chat/completions`.
The request body is read whole but not parsed: checking for the `stream` field is enough here.

Run: `python -m benchmarks.standin --port 8101 --model NAME`
"""

import argparse
import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TEXT = "stand-in transcript"
USAGE = {"prompt_tokens": 100, "completion_tokens": 4, "total_tokens": 104}
STREAM_FIELD = b'name="stream"'


def _sse(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _transcription_events() -> list[bytes]:
    chunk = {"object": "transcription.chunk", "choices": [{"delta": {"content": TEXT}}]}
    return [_sse(chunk), _sse({"object": "transcription.chunk", "choices": [], "usage": USAGE}), b"data: [DONE]\n\n"]


def _chat_events(model: str) -> list[bytes]:
    delta = {"object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": {"content": TEXT}}]}
    usage = {"object": "chat.completion.chunk", "model": model, "choices": [], "usage": USAGE}
    return [_sse(delta), _sse(usage), b"data: [DONE]\n\n"]


def _events(events: list[bytes]) -> StreamingResponse:
    async def body():
        for event in events:
            yield event

    return StreamingResponse(body(), media_type="text/event-stream")


def build_app(model: str) -> Starlette:
    async def health(_: Request) -> Response:
        return Response(status_code=200)

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "stand-in"}]})

    async def transcription(request: Request) -> Response:
        body = await request.body()
        if STREAM_FIELD in body:
            return _events(_transcription_events())
        return JSONResponse({"text": TEXT, "usage": USAGE})

    async def chat(request: Request) -> Response:
        body = await request.json()
        if body.get("stream"):
            return _events(_chat_events(model))
        message = {"role": "assistant", "content": TEXT}
        return JSONResponse(
            {
                "object": "chat.completion",
                "model": model,
                "usage": USAGE,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/audio/transcriptions", transcription, methods=["POST"]),
            Route("/v1/audio/translations", transcription, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="stand-in")
    args = parser.parse_args()
    uvicorn.run(build_app(args.model), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
