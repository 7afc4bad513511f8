"""Run one realtime session over any transport (WebSocket, raw TCP; WebRTC next): the engine, the
`RealtimeSession`, its outbox, the tasks that serve it, the limits and shedding, and the shutdown.

The transport implements `SessionTransport`, the runner's seam: how to send a server message, and
how the client's input reaches the session (`read_messages` or `read_audio` do the reading, through
the transport's receive). `run_session` then runs two tasks: the sender drains the outbox to the
client; the input side feeds the session. Whichever of them ends first ends the session (or a
backend failure does, or the session's maximum length); then both are cancelled and the session is
closed, which drops the audio still waiting, cancels its transcription tasks and so aborts their
vLLM requests. It returns an `Outcome` saying why it ended; the transport tells the client (close
codes, an error event or line), logs it, and closes.

Messages (`read_messages`): one task takes them off the connection into the inbox as they come (so
WebSocket pings and pongs are never stuck behind audio), another applies them to the session in
order. When processing falls behind (the oldest waiting message waited longer than
`REALTIME_MAX_LAG_S`), the session tells the process's `LagShedder`, which sheds the newest of the
lagging sessions one at a time (`shedding`); more than `REALTIME_MAX_BACKLOG_MB` waiting sheds a
session at once. Either way it is shed on purpose with `session_lagging`. A raw audio stream
(`read_audio`) is appended as it is read instead, so a client sending faster than it is served is
slowed down, never shed.
"""

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from server.core import metrics
from server.core.errors import APIError
from server.core.settings import Settings
from server.core.tasks import cancel_and_wait
from server.realtime.admission import session_expired
from server.realtime.config import SessionConfig
from server.realtime.engines import EngineKind
from server.realtime.events import Event
from server.realtime.queues import Inbox, Outbox
from server.realtime.services import RealtimeServices
from server.realtime.session import RealtimeSession
from server.realtime.shedding import LagShedder
from vad import SAMPLE_RATE

Message = dict[str, Any]


@dataclass(frozen=True)
class Samples:
    """Audio the transport decoded itself (a WebRTC call's track: 16 kHz float32), applied to the
    session in order with the client's messages."""

    audio: np.ndarray

    def __len__(self) -> int:
        return int(self.audio.nbytes)


Frame = str | bytes | Samples  # a text message, a binary one, or decoded audio
CLOSE_TIMEOUT_S = 5.0
MB = 1_048_576
T = TypeVar("T")


class End(enum.Enum):
    """Why a session ended; the value says it in a log line."""

    NO_ENGINE = "refused: no realtime model"
    BACKEND_FAILED = "transcription backend failed"
    CRASHED = "internal error"
    CLIENT_GONE = "client disconnected"
    SLOW_CLIENT = "client too slow"
    LAGGING = "session lagging"
    TOO_LARGE = "message too large"
    IDLE = "idle timeout"
    INPUT_ENDED = "end of stream"
    EXPIRED = "session expired"


@dataclass(frozen=True)
class Outcome:
    """How a session ended: `error` is what to tell the client, if anything; `exc` is what a task
    raised (`CRASHED`: the input side; `CLIENT_GONE`: sending)."""

    end: End
    error: APIError | None = None
    exc: BaseException | None = None


class WireProtocol(Protocol):
    """What a protocol adapter provides (see `protocols/openai.py` and `protocols/simple.py`)."""

    def initial_config(self) -> SessionConfig: ...
    def streams_with(self, model: str) -> None: ...
    def opening(self, config: SessionConfig) -> list[Message]: ...
    def error(self, exc: APIError) -> Message: ...
    async def handle(self, text: str, session: RealtimeSession) -> list[Message]: ...
    def render(self, event: Event) -> list[Message]: ...


@dataclass(frozen=True)
class Live:
    """A running session, as the transport's input side sees it."""

    session: RealtimeSession
    protocol: WireProtocol
    outbox: Outbox
    settings: Settings
    shedder: LagShedder


class SessionTransport(Protocol):
    """The runner's seam: what one client connection provides to `run_session`."""

    async def send_text(self, text: str) -> None:
        """Send one server message (JSON); raise if the connection is broken."""

    async def serve_input(self, live: Live) -> Outcome:
        """Feed the client's input to the session until it ends (with `read_messages` or
        `read_audio`, and whatever the transport does at the end); the outcome says how it ended."""

    def on_event(self, event: Event) -> None:
        """Each event the session emits, before it is rendered (and must not block)."""


async def run_session(transport: SessionTransport, protocol: WireProtocol, services: RealtimeServices) -> Outcome:
    """Serve one session until it ends; the caller holds its admission."""
    settings = services.settings
    try:
        kind, stream = await services.engines.select()
    except RuntimeError as exc:
        return Outcome(End.NO_ENGINE, APIError(503, str(exc), code="backend_unavailable"))
    if kind != EngineKind.STREAM:
        stream = None
    if stream is not None:
        protocol.streams_with(stream.model)
    outbox = Outbox(settings.realtime_send_queue, int(settings.realtime_send_queue_mb * MB))
    config = protocol.initial_config()
    failed: asyncio.Future[APIError] = asyncio.get_running_loop().create_future()

    def on_failure(error: APIError) -> None:
        if not failed.done():
            failed.set_result(error)

    def emit(event: Event) -> None:
        transport.on_event(event)
        outbox.put_all(protocol.render(event))

    session = RealtimeSession(
        config,
        backend=services.backend,
        models=services.models,
        vad_engine=services.vad_engine,
        emit=emit,
        default_max_tokens=settings.max_output_tokens,
        max_commit_bytes=int(settings.realtime_max_commit_mb * MB),
        conversation_max_bytes=int(settings.realtime_conversation_max_mb * MB),
        audio_turns=settings.realtime_audio_turns,
        eager_pause_ms=settings.realtime_eager_pause_ms,
        eager_after_check=settings.semantic_eager == "after_check",
        stream_margin_ms=settings.realtime_stream_margin_ms,
        turn_judge=services.turn_judge,
        stream=stream,
        on_failure=on_failure,
    )
    outbox.put_all(protocol.opening(config))
    sender = asyncio.create_task(outbox.run(transport.send_text), name="realtime-sender")
    client = asyncio.create_task(
        transport.serve_input(Live(session, protocol, outbox, settings, services.shedder)), name="realtime-input"
    )
    try:
        waiting: set[asyncio.Future[Any]] = {sender, client, failed}
        done, _ = await asyncio.wait(
            waiting, timeout=settings.realtime_max_session_s, return_when=asyncio.FIRST_COMPLETED
        )
        if failed in done:
            # The events already emitted (the items' `.failed`) go out before the closing error.
            await outbox.flush(CLOSE_TIMEOUT_S)
    finally:
        await cancel_and_wait((sender, client))
        await session.aclose()
    if failed in done:
        return Outcome(End.BACKEND_FAILED, failed.result())
    if client in done:
        if (raised := client.exception()) is not None:
            return Outcome(End.CRASHED, exc=raised)
        return client.result()
    if sender in done:
        if outbox.overflowed:
            return Outcome(End.SLOW_CLIENT)
        return Outcome(End.CLIENT_GONE, exc=sender.exception())  # the connection broke: the client is gone
    return Outcome(End.EXPIRED, session_expired(settings.realtime_max_session_s))


async def _within(idle_s: float, receive: Callable[[], Awaitable[T]]) -> T:
    """`receive()`, or `TimeoutError` after `idle_s`."""
    # Not wait_for: in Python 3.11 it returns a message that arrives as the task is cancelled and
    # swallows the cancellation; the reader then never ends.
    async with asyncio.timeout(idle_s):
        return await receive()


async def read_messages(live: Live, receive: Callable[[], Awaitable[Frame | None]]) -> Outcome:
    """Read the client's messages (`receive` gives the next one, None once the client is gone) into
    the inbox, and apply them to the session in order, until the session must end."""
    inbox: Inbox[Frame] = Inbox()
    with live.shedder.watching(inbox.lag_s, live.settings.realtime_max_lag_s) as watch:
        reader = asyncio.create_task(_read(live, receive, inbox), name="realtime-reader")
        processor = asyncio.create_task(_process(live, inbox), name="realtime-processor")
        shed = asyncio.create_task(watch.shed.wait(), name="realtime-shed")
        try:
            await asyncio.wait((reader, processor, shed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait((reader, processor, shed))
    if not processor.cancelled():
        processor.result()  # it ends only by raising
    if reader.cancelled():  # the shedder chose this session
        return _lagging(inbox.lag_s(), inbox, live.settings)
    return reader.result()


async def _read(live: Live, receive: Callable[[], Awaitable[Frame | None]], inbox: Inbox[Frame]) -> Outcome:
    """Take client messages off the connection as they come; end the session when it must end,
    and tell the shedder when it lags."""
    settings = live.settings
    max_bytes = int(settings.realtime_max_message_mb * MB)
    max_backlog = int(settings.realtime_max_backlog_mb * MB)
    idle_s = settings.realtime_idle_timeout_s
    while True:
        try:
            frame = await _within(idle_s, receive)
        except TimeoutError:
            return Outcome(
                End.IDLE, APIError(408, f"No client event for {idle_s:g} s; closing the session.", code="idle_timeout")
            )
        if frame is None:
            return Outcome(End.INPUT_ENDED)
        if len(frame) > max_bytes:
            return Outcome(
                End.TOO_LARGE,
                APIError(
                    413, f"A message is larger than {settings.realtime_max_message_mb:g} MB.", code="message_too_large"
                ),
            )
        inbox.put(frame)
        lag_s = inbox.lag_s()
        if inbox.bytes > max_backlog:
            return _lagging(lag_s, inbox, settings)
        if lag_s > settings.realtime_max_lag_s:
            live.shedder.report(settings.realtime_shed_interval_s)


def _lagging(lag_s: float, inbox: Inbox[Frame], settings: Settings) -> Outcome:
    message = (
        f"The server fell behind this session: its oldest waiting message waited {lag_s:.1f} s "
        f"(at most {settings.realtime_max_lag_s:g} s), {len(inbox)} messages "
        f"({inbox.bytes / MB:.1f} MB, at most {settings.realtime_max_backlog_mb:g} MB) wait. "
        "The session is closed; try again later."
    )
    return Outcome(End.LAGGING, APIError(503, message, code="session_lagging"))


async def _process(live: Live, inbox: Inbox[Frame]) -> None:
    """Apply the client's messages to the session one by one, in the order they came; the
    protocols speak JSON text, so a binary message gets an error."""
    while True:
        frame = await inbox.next()
        if isinstance(frame, Samples):
            metrics.count_key_audio(len(frame.audio) / SAMPLE_RATE)
            try:
                await live.session.append_samples(frame.audio)
            except APIError as exc:
                live.outbox.put_all([live.protocol.error(exc)])
        elif isinstance(frame, bytes):
            error = APIError(400, "Binary frames are not supported; send JSON text.", code="invalid_json")
            live.outbox.put_all([live.protocol.error(error)])
        else:
            live.outbox.put_all(await live.protocol.handle(frame, live.session))
        inbox.done()


async def read_audio(live: Live, receive: Callable[[], Awaitable[bytes | None]]) -> Outcome:
    """Append the client's raw audio (bytes in the session's input format; `receive` gives the next
    ones, None at the end of the stream) to the session as it is read, until the stream ends or
    goes idle."""
    idle_s = live.settings.realtime_idle_timeout_s
    while True:
        try:
            data = await _within(idle_s, receive)
        except TimeoutError:
            return Outcome(
                End.IDLE, APIError(408, f"No audio for {idle_s:g} s; closing the session.", code="idle_timeout")
            )
        if data is None:
            return Outcome(End.INPUT_ENDED)
        metrics.count_key_audio(live.session.config.audio_format.seconds(len(data)))
        await live.session.append(data)
