"""The edge application: wiring of settings, shared clients, middleware and routes.

`create_app()` is what uvicorn runs (`server.process.launcher` starts it with `factory=True`).
"""

import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.access import require_api_key
from server.api.error_handlers import install_error_handlers
from server.api.health_port import HealthServer
from server.api.routes import audio, calls, chat, client_secrets, models, realtime, service
from server.api.services import Services
from server.core import connections, metrics
from server.core.errors import too_large
from server.core.settings import Settings, get_settings
from server.realtime.transports.tcp import TCPStreamServer
from server.realtime.webrtc.ice import install_host_addresses

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
log = logging.getLogger("edge")


class BodyLimit:
    """Refuse request bodies above `MAX_UPLOAD_MB` with 413, by header or while they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit_mb = self.max_bytes / 1_048_576
        declared = dict(scope["headers"]).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            return await too_large(f"The request body is larger than {limit_mb:g} MB.").response()(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise too_large(f"The request body is larger than {limit_mb:g} MB.")
            return message

        await self.app(scope, counted, send)


class RequestMetrics:
    """Count requests by route template and status, and time them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.REQUESTS.labels(route, str(status)).inc()
            metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_summary(services: Services) -> str:
    if not services.keys.required:
        return "open (no API keys)"
    return f"API keys required ({', '.join(services.keys.names)})"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        install_host_addresses(settings)
        services = Services.build(settings)
        await services.start()
        app.state.services = services
        if not services.keys.required and not is_loopback(settings.host):
            log.warning(
                "the edge listens on %s without API keys: anyone who reaches it can use it (set API_KEYS)",
                settings.host,
            )
        # With several workers each binds the extra ports too (SO_REUSEPORT): the kernel spreads
        # their connections over the workers, as it does for the main port's.
        several_workers = settings.workers > 1
        # One count of open connections for the process: uvicorn's protocols (`wire_limits`) find it
        # in the lifespan state, the raw TCP stream is given it.
        table = connections.ConnectionTable.of(settings)
        try:
            async with AsyncExitStack() as ports:
                if settings.tcp_port is not None:
                    tcp = TCPStreamServer(services.realtime, table)
                    await tcp.start(settings.host, settings.tcp_port, reuse_port=several_workers)
                    ports.push_async_callback(tcp.aclose)
                if settings.health_port is not None:
                    health = HealthServer(services)
                    await health.start(settings.host, settings.health_port, reuse_port=several_workers)
                    ports.push_async_callback(health.aclose)
                log.info("edge ready; backend %s; %s", settings.backend_url, access_summary(services))
                yield {connections.STATE_KEY: table}
        finally:
            await services.aclose()

    # The API docs (/docs, /redoc) load Swagger UI and ReDoc from the `fastapi-offline` package
    # instead of a CDN, so they work on hosts without internet access.
    app = FastAPIOffline(
        title="Voxtral edge",
        description="OpenAI-compatible speech API for Voxtral served by vLLM.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # Every /v1 HTTP router takes the key dependency; realtime sockets check at their handshake.
    protected = [Depends(require_api_key)]
    app.include_router(audio.router, dependencies=protected)
    app.include_router(chat.router, dependencies=protected)
    app.include_router(models.router, dependencies=protected)
    app.include_router(client_secrets.router, dependencies=protected)
    app.include_router(service.router)
    app.include_router(realtime.router)
    app.include_router(calls.router)
    app.mount("/ui", StaticFiles(directory=UI_DIR, check_dir=False), name="ui")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        """The browser UI; its assets are under /ui/."""
        return FileResponse(UI_DIR / "index.html")

    app.add_middleware(BodyLimit, max_bytes=int(settings.max_upload_mb * 1_048_576))
    app.add_middleware(RequestMetrics)
    if origins := settings.cors_origin_list:
        # Outermost, so that preflights are answered before any route's key check, and refusals
        # (401, 413, 503) carry the headers too: a page can read why it was refused. Keys travel
        # in the Authorization header, never cookies, so no credentials mode.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["Location", "Retry-After"],
            max_age=600,
        )
    return app
