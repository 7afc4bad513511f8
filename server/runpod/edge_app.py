"""The HTTP edge's own ASGI app inside the RunPod worker, which `openai_route` jobs are sent through:
the same routes, validation, limits and errors as the edge, and one `Services` for every job.

The worker listens on no port: the app's settings drop the edge's extra ports (`TCP_PORT`,
`HEALTH_PORT`) and put it on loopback (so that its start does not warn about an open address).

RunPod has authorised the job before the worker gets it, so the app's API keys (`API_KEYS`, if
set) must not refuse it. The requests sent here carry a scope entry naming their caller, which no
network client can set (a server builds the scope from what it receives, and the worker serves
none), and the app's key dependency is overridden to accept a request that carries it; any other
request still needs a key.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

from fastapi import Request
from starlette.routing import Match
from starlette.types import Scope

from server.api.access import Bearer, require_api_key
from server.api.app import create_app
from server.api.services import Services
from server.core.auth import Identity
from server.core.settings import Settings
from server.runpod import asgi_call
from server.runpod.asgi_call import InProcessResponse
from server.runpod.lifespan import Lifespan

# The scope entry of a request this process sends itself: the caller's name (its identity).
IN_PROCESS_CALLER = "voxtral.in_process_caller"
RUNPOD_CALLER = "runpod"


async def in_process_or_api_key(request: Request, credentials: Bearer) -> Identity:
    """`require_api_key`, except for a request this process sent itself: its caller is trusted."""
    caller = request.scope.get(IN_PROCESS_CALLER)
    if isinstance(caller, str):
        return Identity(caller)
    return await require_api_key(request, credentials)


class EdgeApp:
    """The edge's app, its lifespan started by the first job, and requests sent to it in-process."""

    def __init__(self, settings: Settings) -> None:
        worker = settings.model_copy(update={"host": "127.0.0.1", "tcp_port": None, "health_port": None})
        self.app = create_app(worker)
        self.app.dependency_overrides[require_api_key] = in_process_or_api_key
        self._lifespan = Lifespan(self.app)

    async def services(self) -> Services:
        """The app's services (started with the app if it was not yet)."""
        await self._lifespan.started()
        found = getattr(self.app.state, "services", None)
        if not isinstance(found, Services):
            raise RuntimeError("the edge app started without its services")
        return found

    async def aclose(self) -> None:
        await self._lifespan.aclose()

    def method(self, path: str) -> str:
        """The method to send `path` with: a job names only the route, so POST if a route takes it, else GET."""
        probe = {"type": "http", "path": path, "root_path": "", "method": "POST"}
        takes_post = any(route.matches(probe)[0] is Match.FULL for route in self.app.router.routes)
        return "POST" if takes_post else "GET"

    @asynccontextmanager
    async def request(self, route: str, body: dict[str, Any]) -> AsyncIterator[InProcessResponse]:
        """Send `body` (JSON) to `route` (a path, with or without a query) as the trusted RunPod caller.

        A GET carries no body.
        """
        await self._lifespan.started()
        path, _, query = route.partition("?")
        method = self.method(unquote(path))
        content = json.dumps(body).encode() if method == "POST" else b""
        headers = [(b"host", b"runpod-worker")]
        if method == "POST":
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        async with asgi_call.request(self.app, self._scope(method, path, query, headers), content) as response:
            yield response

    def _scope(self, method: str, path: str, query: str, headers: list[tuple[bytes, bytes]]) -> Scope:
        return {
            "type": "http",
            # uvicorn's spec version: a streaming response then listens for the client's disconnect.
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers,
            "client": None,
            "server": None,
            "state": dict(self._lifespan.state),
            IN_PROCESS_CALLER: RUNPOD_CALLER,
        }
