"""Run one realtime WebSocket: session limits, the bounded queues, shedding, and clean shutdown.

Three tasks serve a connection: the reader takes client messages off the socket into the inbox
as they come (so pings and pongs are never stuck behind audio), the processor applies them to the
session in order, the sender drains the outbox to the socket. Whichever of them ends first ends
the connection (or the session's maximum length does); then all are cancelled and the session is
closed, which drops the audio still waiting, cancels its transcription tasks and so aborts their
vLLM requests. The session's slot is free at once.

When processing falls behind (the oldest waiting message waited longer than `REALTIME_MAX_LAG_S`,
or more than `REALTIME_MAX_BACKLOG_MB` wait), the session is shed on purpose: an `error` with
code `session_lagging`, close code 1013, a metric and a log line.
"""

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.websockets import WebSocket

from server import metrics
from server.auth import Identity
from server.errors import APIError
from server.realtime.admission import SessionsFull, admitted, session_expired
from server.realtime.config import SessionConfig
from server.realtime.engines import EngineKind
from server.realtime.events import Event
from server.realtime.queues import Inbox, Outbox
from server.realtime.session import RealtimeSession
from server.settings import Settings

if TYPE_CHECKING:
    from server.services import Services

Message = dict[str, Any]
CLOSE_TIMEOUT_S = 5.0
MB = 1_048_576
log = logging.getLogger("edge.realtime")


class WireProtocol(Protocol):
    """What a protocol adapter provides (see `openai_protocol` and `simple_protocol`)."""

    def initial_config(self) -> SessionConfig: ...
    def streams_with(self, model: str) -> None: ...
    def opening(self, config: SessionConfig) -> list[Message]: ...
    def error(self, exc: APIError) -> Message: ...
    async def handle(self, text: str, session: RealtimeSession) -> list[Message]: ...
    def render(self, event: Event) -> list[Message]: ...


@dataclass(frozen=True)
class Closing:
    """How the server ends a connection; `error` is sent to the client first."""

    code: int
    reason: str
    error: APIError | None = None
    shed: str | None = None  # set when the edge sheds the session to protect itself: the metric's reason


async def serve_connection(
    websocket: WebSocket, protocol: WireProtocol, state: "Services", identity: Identity, subprotocol: str | None
) -> None:
    """Accept the WebSocket and serve it, or close it with 1013 when the key's sessions or the
    edge's are all taken."""
    await websocket.accept(subprotocol=subprotocol)
    try:
        with admitted(state, identity):
            closing = await _serve(websocket, protocol, state)
    except SessionsFull as full:
        log.warning("refusing a realtime session from %s (key %s): %s", _peer(websocket), identity.name, full.message)
        closing = Closing(1013, full.message)
    else:
        if closing is None:
            return
        _report(websocket, closing)
    await _close(websocket, protocol, closing)


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


async def _serve(websocket: WebSocket, protocol: WireProtocol, state: "Services") -> Closing | None:
    settings = state.settings
    try:
        kind, stream = await state.realtime_engines.select()
    except RuntimeError as exc:
        return Closing(1013, "No realtime model.", APIError(503, str(exc), code="backend_unavailable"))
    if kind == EngineKind.STREAM and stream is not None:
        protocol.streams_with(stream.model)
    outbox = Outbox(settings.realtime_send_queue, int(settings.realtime_send_queue_mb * MB))
    inbox = Inbox()
    config = protocol.initial_config()
    failed: asyncio.Future[APIError] = asyncio.get_running_loop().create_future()

    def on_failure(error: APIError) -> None:
        if not failed.done():
            failed.set_result(error)

    session = RealtimeSession(
        config,
        backend=state.backend,
        models=state.models,
        vad_engine=state.vad_engine,
        emit=lambda event: outbox.put_all(protocol.render(event)),
        default_max_tokens=settings.max_output_tokens,
        max_commit_bytes=int(settings.realtime_max_commit_mb * MB),
        stream=stream if kind == EngineKind.STREAM else None,
        on_failure=on_failure,
    )
    outbox.put_all(protocol.opening(config))
    sender = asyncio.create_task(outbox.run(websocket.send_text), name="realtime-sender")
    reader = asyncio.create_task(_read(websocket, inbox, settings), name="realtime-reader")
    processor = asyncio.create_task(_process(inbox, protocol, session, outbox), name="realtime-processor")
    tasks = (sender, reader, processor)
    try:
        waiting: set[asyncio.Future[Any]] = {*tasks, failed}
        done, _ = await asyncio.wait(
            waiting, timeout=settings.realtime_max_session_s, return_when=asyncio.FIRST_COMPLETED
        )
        if failed in done:
            # The events already emitted (the items' `.failed`) go out before the closing error.
            await outbox.flush(CLOSE_TIMEOUT_S)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
    if failed in done:
        return Closing(1013, "Transcription backend failed.", failed.result())
    for task in (reader, processor):
        if task in done and task.exception() is not None:
            log.error("realtime session from %s failed", _peer(websocket), exc_info=task.exception())
            return Closing(1011, "Internal error.")
    if reader in done:
        return reader.result()
    if sender in done:
        if outbox.overflowed:
            return Closing(
                1008,
                f"Client too slow: more than {settings.realtime_send_queue} events "
                f"or {settings.realtime_send_queue_mb:g} MB waiting.",
                shed="slow_client",
            )
        return None  # the socket broke: the client is gone
    return Closing(1000, "Session expired.", session_expired(settings.realtime_max_session_s))


async def _read(websocket: WebSocket, inbox: Inbox, settings: Settings) -> Closing | None:
    """Take client messages off the socket as they come; end the session when it must end."""
    max_bytes = int(settings.realtime_max_message_mb * MB)
    max_backlog = int(settings.realtime_max_backlog_mb * MB)
    idle_s = settings.realtime_idle_timeout_s
    while True:
        try:  # not wait_for: in Python 3.11 it returns a message that arrives as the task is cancelled
            async with asyncio.timeout(idle_s):  # and swallows the cancellation; this reader then never ends
                message = await websocket.receive()
        except TimeoutError:
            return Closing(
                1000,
                "Idle timeout.",
                APIError(408, f"No client event for {idle_s:g} s; closing the session.", code="idle_timeout"),
            )
        if message["type"] == "websocket.disconnect":
            # The client left, or the connection died (uvicorn's keepalive: no pong in time).
            log.info(
                "realtime session from %s ended by the connection (close %s %s)",
                _peer(websocket),
                message.get("code"),
                message.get("reason") or "",
            )
            return None
        frame = message.get("text")
        if frame is None:
            frame = message.get("bytes") or b""
        if len(frame) > max_bytes:
            return Closing(
                1009,
                "Message too big.",
                APIError(
                    413, f"A message is larger than {settings.realtime_max_message_mb:g} MB.", code="message_too_large"
                ),
            )
        inbox.put(frame)
        lag_s = inbox.lag_s()
        if lag_s > settings.realtime_max_lag_s or inbox.bytes > max_backlog:
            return _lagging(lag_s, inbox, settings)


def _lagging(lag_s: float, inbox: Inbox, settings: Settings) -> Closing:
    message = (
        f"The server fell behind this session: its oldest waiting message waited {lag_s:.1f} s "
        f"(at most {settings.realtime_max_lag_s:g} s), {len(inbox)} messages "
        f"({inbox.bytes / MB:.1f} MB, at most {settings.realtime_max_backlog_mb:g} MB) wait. "
        "The session is closed; try again later."
    )
    return Closing(
        1013, "Server overloaded: session lagging.", APIError(503, message, code="session_lagging"), shed="lagging"
    )


async def _process(inbox: Inbox, protocol: WireProtocol, session: RealtimeSession, outbox: Outbox) -> None:
    """Apply the client's messages to the session one by one, in the order they came."""
    while True:
        frame = await inbox.next()
        if isinstance(frame, bytes):
            error = APIError(400, "Binary frames are not supported; send JSON text.", code="invalid_json")
            outbox.put_all([protocol.error(error)])
        else:
            outbox.put_all(await protocol.handle(frame, session))
        inbox.done()


async def _close(websocket: WebSocket, protocol: WireProtocol, closing: Closing) -> None:
    """Send the closing error and the close frame; a client that is gone or stuck is not waited for."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            if closing.error is not None:
                await websocket.send_text(json.dumps(protocol.error(closing.error)))
            await websocket.close(closing.code, closing.reason)
    except Exception as exc:  # the client went away meanwhile; nothing left to tell it
        log.debug("closing a realtime connection failed: %r", exc)
