"""The health port (`HEALTH_PORT`): `/health`, `/ready` and `/metrics` on a port of their own, so
load balancers' probes and a Prometheus scraper need not use the public port.

It is a second uvicorn server on the edge's event loop, started and stopped by the app's
lifespan, with the same services as the edge; the edge's own server keeps handling signals.
"""

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import uvicorn
from fastapi import FastAPI

from server.api.routes import service
from server.api.services import Services
from server.api.wire_limits import http_protocol


class _SideServer(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals to the edge's server, which ends this one in its lifespan."""
        yield


def health_app(services: Services) -> FastAPI:
    app = FastAPI(title="Voxtral edge health", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_api_route("/health", service.health, methods=["GET"])
    app.add_api_route("/ready", service.ready, methods=["GET"])
    app.add_api_route("/metrics", service.prometheus_metrics, methods=["GET"])
    app.state.services = services
    return app


class HealthServer:
    def __init__(self, services: Services) -> None:
        config = uvicorn.Config(
            health_app(services),
            lifespan="off",
            log_config=None,
            log_level=services.settings.log_level,
            access_log=False,
            http=cast(type[asyncio.Protocol], http_protocol(services.settings)),  # uvicorn calls it like a class
            ws="none",
        )
        self._server = _SideServer(config)
        self._task: asyncio.Task | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Bind first, so a port in use fails the edge's start-up with the bind error; `reuse_port`
        lets several workers listen on the same port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, reuse_port=reuse_port)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="health-port")
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()

    async def aclose(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
