"""Serve one realtime WebSocket: admission, the session (`runner`), and how it ends on the wire.

The WebSocket's own part: its messages are text (JSON events) or binary frames (refused), a client
that leaves sends a disconnect, and the server ends a session with a close code and, when there is
one, an `error` event first. A session shed on purpose (`session_lagging`: close 1013; a client too
slow to read: close 1008) is counted in a metric; every session the server ends logs one line.
"""

import asyncio
import json
import logging
from dataclasses import dataclass

from starlette.websockets import WebSocket

from server.core import metrics
from server.core.auth import Identity
from server.core.errors import APIError
from server.core.settings import Settings
from server.realtime.admission import SessionsFull, admitted
from server.realtime.events import Event
from server.realtime.runner import CLOSE_TIMEOUT_S, End, Frame, Live, Outcome, WireProtocol, read_messages, run_session
from server.realtime.services import RealtimeServices

log = logging.getLogger("edge.realtime")


@dataclass(frozen=True)
class Closing:
    """How the server ends a connection; `error` is sent to the client first."""

    code: int
    reason: str
    error: APIError | None = None
    shed: str | None = None  # set when the edge sheds the session to protect itself: the metric's reason


async def serve_connection(
    websocket: WebSocket,
    protocol: WireProtocol,
    services: RealtimeServices,
    identity: Identity,
    subprotocol: str | None,
) -> None:
    """Accept the WebSocket and serve it, or close it with 1013 when the key's sessions or the
    edge's are all taken."""
    await websocket.accept(subprotocol=subprotocol)
    try:
        with admitted(services.slots, services.keys.sessions, identity):
            outcome = await run_session(_Socket(websocket), protocol, services)
            closing = _closing(websocket, outcome, services.settings)
    except SessionsFull as full:
        log.warning("refusing a realtime session from %s (key %s): %s", _peer(websocket), identity.name, full.message)
        closing = Closing(1013, full.message)
    else:
        if closing is None:
            return
        _report(websocket, closing)
    await _close(websocket, protocol, closing)


class _Socket:
    """The WebSocket's side of the runner's seam."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def send_text(self, text: str) -> None:
        await self._websocket.send_text(text)

    async def serve_input(self, live: Live) -> Outcome:
        return await read_messages(live, self._receive)

    def on_event(self, event: Event) -> None:
        pass  # the session's events reach the client through the protocol only

    async def _receive(self) -> Frame | None:
        message = await self._websocket.receive()
        if message["type"] == "websocket.disconnect":
            # The client left, or the connection died (uvicorn's keepalive: no pong in time).
            log.info(
                "realtime session from %s ended by the connection (close %s %s)",
                _peer(self._websocket),
                message.get("code"),
                message.get("reason") or "",
            )
            return None
        frame: Frame | None = message.get("text")
        if frame is None:
            frame = message.get("bytes") or b""
        return frame


def _closing(websocket: WebSocket, outcome: Outcome, settings: Settings) -> Closing | None:
    """How the WebSocket ends after `outcome`; None when the client is gone already."""
    match outcome.end:
        case End.NO_ENGINE:
            return Closing(1013, "No realtime model.", outcome.error)
        case End.BACKEND_FAILED:
            return Closing(1013, "Transcription backend failed.", outcome.error)
        case End.CRASHED:
            log.error("realtime session from %s failed", _peer(websocket), exc_info=outcome.exc)
            return Closing(1011, "Internal error.")
        case End.SLOW_CLIENT:
            return Closing(
                1008,
                f"Client too slow: more than {settings.realtime_send_queue} events "
                f"or {settings.realtime_send_queue_mb:g} MB waiting.",
                shed="slow_client",
            )
        case End.LAGGING:
            return Closing(1013, "Server overloaded: session lagging.", outcome.error, shed="lagging")
        case End.TOO_LARGE:
            return Closing(1009, "Message too big.", outcome.error)
        case End.IDLE:
            return Closing(1000, "Idle timeout.", outcome.error)
        case End.EXPIRED:
            return Closing(1000, "Session expired.", outcome.error)
        case End.CLIENT_GONE | End.INPUT_ENDED:
            return None


def _peer(websocket: WebSocket) -> str:
    return f"{websocket.client.host}:{websocket.client.port}" if websocket.client else "?"


def _report(websocket: WebSocket, closing: Closing) -> None:
    """One log line for every session the server ends, saying why; sheds are counted too."""
    why = closing.error.message if closing.error is not None else closing.reason
    code = closing.error.code if closing.error is not None else None
    if closing.shed is not None:
        metrics.REALTIME_SHED.labels(closing.shed).inc()
        log.warning("shedding realtime session from %s (%s, close %d): %s", _peer(websocket), code, closing.code, why)
    else:
        log.info("closing realtime session from %s (%s, close %d): %s", _peer(websocket), code, closing.code, why)


async def _close(websocket: WebSocket, protocol: WireProtocol, closing: Closing) -> None:
    """Send the closing error and the close frame; a client that is gone or stuck is not waited for."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            if closing.error is not None:
                await websocket.send_text(json.dumps(protocol.error(closing.error)))
            await websocket.close(closing.code, closing.reason)
    except Exception as exc:  # the client went away meanwhile; nothing left to tell it
        log.debug("closing a realtime connection failed: %r", exc)
