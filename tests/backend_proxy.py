"""A recording proxy in front of the real vLLM: every answer comes from vLLM, the proxy only
notes what the edge sent (path and JSON body) and how many requests were in flight at once
(each from when it is forwarded to vLLM until vLLM's answer has been read).
"""

import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port


class RecordingProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.bodies: list[tuple[str, Any]] = []
        self.raw: list[tuple[str, bytes]] = []
        self.in_flight = 0
        self.peak = 0
        app = Starlette(routes=[Route("/{path:path}", self._forward, methods=["GET", "POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{config.port}"
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy did not start")
            time.sleep(0.02)

    def paths(self, path: str) -> list[Any]:
        """JSON bodies sent to `path` (None for non-JSON ones), in order."""
        return [body for sent, body in self.bodies if sent == path]

    async def _forward(self, request: Request) -> Response:
        content = await request.body()
        try:
            body = json.loads(content) if content else None
        except ValueError:
            body = None
        self.bodies.append((request.url.path, body))
        self.raw.append((request.url.path, content))
        client = httpx.AsyncClient(base_url=self.target, timeout=300)
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        # In flight from the moment it goes to vLLM: a transcription without `stream` has its
        # headers only once vLLM is done with it, so counting from the headers would see it for
        # the millisecond its body takes to relay, not for the time vLLM works on it.
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            upstream = await client.send(
                client.build_request(request.method, request.url.path, content=content, headers=headers), stream=True
            )
        except BaseException:
            self.in_flight -= 1
            await client.aclose()
            raise
        media_type = upstream.headers.get("content-type")
        if not (media_type or "").startswith("text/event-stream"):
            # Read whole, so the request leaves the count before the edge has its answer.
            try:
                content = await upstream.aread()
            finally:
                self.in_flight -= 1
                await client.aclose()
            return Response(content, status_code=upstream.status_code, media_type=media_type)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                self.in_flight -= 1
                await upstream.aclose()
                await client.aclose()

        return StreamingResponse(relay(), status_code=upstream.status_code, media_type=media_type)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
