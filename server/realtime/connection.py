"""Run one realtime WebSocket: session limits, the bounded outgoing queue, and clean shutdown.

Two tasks serve a connection: the receiver applies client messages to the session in order, the
sender drains the outgoing queue to the socket. Whichever ends first ends the connection (or the
session's maximum length does); then both are cancelled and the session is closed, which cancels
its transcription tasks and so aborts their vLLM requests.
"""

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.websockets import WebSocket

from server import metrics
from server.errors import APIError
from server.realtime.config import SessionConfig
from server.realtime.events import Event
from server.realtime.session import RealtimeSession
from server.settings import Settings

if TYPE_CHECKING:
    from server.services import Services

Message = dict[str, Any]
CLOSE_TIMEOUT_S = 5.0
log = logging.getLogger("edge.realtime")


class WireProtocol(Protocol):
    """What a protocol adapter provides (see `openai_protocol` and `simple_protocol`)."""

    def initial_config(self) -> SessionConfig: ...
    def opening(self, config: SessionConfig) -> list[Message]: ...
    def error(self, exc: APIError) -> Message: ...
    async def handle(self, text: str, session: RealtimeSession) -> list[Message]: ...
    def render(self, event: Event) -> list[Message]: ...


class SessionSlots:
    """Counts open sessions of one app against `REALTIME_MAX_SESSIONS`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def try_acquire(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


class Outbox:
    """Server events waiting to be sent. Beyond `limit` waiting, the client is too slow: the queue
    is dropped and `run` returns, which closes the connection, instead of letting memory grow."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._items: deque[Message] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False

    def put_all(self, messages: list[Message]) -> None:
        for message in messages:
            if self.overflowed:
                return
            if len(self._items) >= self._limit:
                self.overflowed = True
                self._items.clear()
            else:
                self._items.append(message)
            self._ready.set()

    async def run(self, websocket: WebSocket) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._items and not self.overflowed:
                await websocket.send_text(json.dumps(self._items.popleft()))
            if self.overflowed:
                return


@dataclass(frozen=True)
class Closing:
    """How the server ends a connection; `error` is sent to the client first."""

    code: int
    reason: str
    error: APIError | None = None


async def serve_connection(
    websocket: WebSocket, protocol: WireProtocol, state: "Services", subprotocol: str | None = None
) -> None:
    """Accept the WebSocket (or refuse it with 1013 when the sessions are all taken) and serve it."""
    await websocket.accept(subprotocol=subprotocol)
    slots = state.realtime_slots
    if not slots.try_acquire():
        await _close(
            websocket, protocol, Closing(1013, f"Too many realtime sessions (at most {slots.limit}); try again later.")
        )
        return
    metrics.REALTIME_SESSIONS.inc()
    try:
        closing = await _serve(websocket, protocol, state)
    finally:
        metrics.REALTIME_SESSIONS.dec()
        slots.release()
    if closing is not None:
        await _close(websocket, protocol, closing)


async def _serve(websocket: WebSocket, protocol: WireProtocol, state: "Services") -> Closing | None:
    settings = state.settings
    outbox = Outbox(settings.realtime_send_queue)
    config = protocol.initial_config()
    session = RealtimeSession(
        config,
        backend=state.backend,
        models=state.models,
        vad_engine=state.vad_engine,
        emit=lambda event: outbox.put_all(protocol.render(event)),
        default_max_tokens=settings.max_output_tokens,
    )
    outbox.put_all(protocol.opening(config))
    sender = asyncio.create_task(outbox.run(websocket), name="realtime-sender")
    receiver = asyncio.create_task(_receive(websocket, protocol, session, outbox, settings), name="realtime-receiver")
    try:
        done, _ = await asyncio.wait(
            {sender, receiver}, timeout=settings.realtime_max_session_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (sender, receiver):
            task.cancel()
        await asyncio.gather(sender, receiver, return_exceptions=True)
        await session.close()
    if receiver in done:
        if receiver.exception() is not None:
            log.error("realtime session failed", exc_info=receiver.exception())
            return Closing(1011, "Internal error.")
        return receiver.result()
    if sender in done:
        if outbox.overflowed:
            log.warning("closing a realtime session: its client reads too slowly")
            return Closing(1008, f"Client too slow: more than {settings.realtime_send_queue} events waiting.")
        return None  # the socket broke: the client is gone
    limit = settings.realtime_max_session_s
    return Closing(
        1000,
        "Session expired.",
        APIError(400, f"The session reached its maximum length of {limit:g} s.", code="session_expired"),
    )


async def _receive(
    websocket: WebSocket, protocol: WireProtocol, session: RealtimeSession, outbox: Outbox, settings: Settings
) -> Closing | None:
    max_bytes = int(settings.realtime_max_message_mb * 1_048_576)
    idle_s = settings.realtime_idle_timeout_s
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), idle_s)
        except TimeoutError:
            return Closing(
                1000,
                "Idle timeout.",
                APIError(408, f"No client event for {idle_s:g} s; closing the session.", code="idle_timeout"),
            )
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is None:
            outbox.put_all(
                [protocol.error(APIError(400, "Binary frames are not supported; send JSON text.", code="invalid_json"))]
            )
            continue
        if len(text) > max_bytes:
            return Closing(
                1009,
                "Message too big.",
                APIError(
                    413, f"A message is larger than {settings.realtime_max_message_mb:g} MB.", code="message_too_large"
                ),
            )
        outbox.put_all(await protocol.handle(text, session))


async def _close(websocket: WebSocket, protocol: WireProtocol, closing: Closing) -> None:
    """Send the closing error and the close frame; a client that is gone or stuck is not waited for."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            if closing.error is not None:
                await websocket.send_text(json.dumps(protocol.error(closing.error)))
            await websocket.close(closing.code, closing.reason)
    except Exception as exc:  # the client went away meanwhile; nothing left to tell it
        log.debug("closing a realtime connection failed: %r", exc)
