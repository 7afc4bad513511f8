"""The raw TCP stream (`TCP_PORT`), for the original voice stack's clients and for
`sox … -t raw - | nc -N HOST PORT`: the client sends PCM16 16 kHz mono bytes, and gets one JSON
line per turn, the `/ws` transcription message (`simple_protocol`), or an error line.

When API keys are required (`authenticate` given), the client's first line is its key. Each
connection runs a `RealtimeSession` with the app's shared VAD engine and takes one of the app's
realtime session slots; the realtime limits apply (idle time, session length, waiting lines).

Nothing is lost at the end of the stream: when the client stops sending (end of file, or idle
time), the turn in progress is committed and every pending transcript is sent before the server
closes. A half sample at the end is dropped; a client that disconnects abruptly has its session,
tasks and vLLM requests cancelled.
"""

import asyncio
import json
import logging
import time
from contextlib import suppress
from enum import Enum
from typing import TYPE_CHECKING, Any

from server import metrics
from server.auth import Identity
from server.errors import APIError
from server.realtime import events as ev
from server.realtime.admission import SessionsFull, admitted, session_expired
from server.realtime.engines import EngineKind
from server.realtime.queues import Outbox
from server.realtime.session import RealtimeSession
from server.realtime.simple_protocol import SimpleProtocol

if TYPE_CHECKING:
    from server.services import Services

READ_BYTES = 65536
CLOSE_TIMEOUT_S = 5.0
log = logging.getLogger("edge.realtime")


class StreamEnd(Enum):
    """Why the client's audio ended."""

    EOF = "end of stream"
    IDLE = "idle timeout"


class PendingTurns:
    """Counts committed turns whose transcript has not been sent yet."""

    def __init__(self) -> None:
        self.count = 0
        self.turns = 0
        self._none = asyncio.Event()
        self._none.set()

    def see(self, event: ev.Event) -> None:
        if isinstance(event, ev.Committed):
            self.count += 1
            self.turns += 1
            self._none.clear()
        elif isinstance(event, (ev.TranscriptCompleted, ev.TranscriptFailed)):
            self.count -= 1
            if self.count == 0:
                self._none.set()

    async def settled(self) -> None:
        await self._none.wait()


class TCPStreamServer:
    """Serves raw PCM16 streams on one TCP port with the app's services.

    When the app's keys are required, the client's first line is its API key (an ephemeral secret
    is not accepted: it is for browsers); the key's name gets the usage metrics and its
    `API_KEY_MAX_SESSIONS` applies, as on the WebSocket routes.
    """

    def __init__(self, state: "Services") -> None:
        self._state = state
        self._protocol = SimpleProtocol()
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task] = set()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Listen on `host:port`; `reuse_port` lets several workers listen on the same port."""
        self._server = await asyncio.start_server(self._client_connected, host, port, reuse_port=reuse_port)
        log.info("raw PCM16 TCP stream on %s:%d", host, port)

    async def aclose(self) -> None:
        """Stop listening and end every open connection (their sessions are closed)."""
        if self._server is not None:
            self._server.close()
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer), name="realtime-tcp-connection")
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        started = time.perf_counter()
        pending = PendingTurns()
        why = "server stopping"
        try:
            why, closing = await self._admit_and_run(reader, writer, pending)
            if closing is not None:
                await self._send_final(reader, writer, closing)
        except (ConnectionError, asyncio.IncompleteReadError):
            why = "client disconnected"
        except Exception:
            log.exception("tcp stream session failed")
            why = "internal error"
        finally:
            writer.close()
            with suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await writer.wait_closed()
            log.info(
                "tcp stream from %s ended (%s) after %.1f s, %d turns",
                peer,
                why,
                time.perf_counter() - started,
                pending.turns,
            )

    async def _admit_and_run(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: PendingTurns
    ) -> tuple[str, APIError | None]:
        settings = self._state.settings
        identity = await self._identify(reader)
        if identity is None:
            refusal = APIError(401, "The first line must be a valid API key.", code="invalid_api_key")
            return "refused: " + refusal.message, refusal
        try:
            with admitted(self._state, identity):
                metrics.usage_key.set(identity.name)
                async with asyncio.timeout(settings.realtime_max_session_s):
                    return await self._run(reader, writer, pending)
        except SessionsFull as full:
            return "refused: " + full.message, full
        except TimeoutError:
            return "session expired", session_expired(settings.realtime_max_session_s)

    async def _identify(self, reader: asyncio.StreamReader) -> Identity | None:
        """Who the client is: with keys required, the API key of its first line (None if missing
        or wrong); without, everyone is let in."""
        keys = self._state.keys
        if not keys.required:
            return keys.check_bearer(None)
        try:
            async with asyncio.timeout(self._state.settings.realtime_idle_timeout_s):
                line = await reader.readline()
            key = line.decode("utf-8").strip()
        except (TimeoutError, ValueError):  # no line in time, a line too long, or not UTF-8
            return None
        return keys.check_bearer(key)

    async def _run(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: PendingTurns
    ) -> tuple[str, APIError | None]:
        settings = self._state.settings
        try:
            kind, stream = await self._state.realtime_engines.select()
        except RuntimeError as exc:
            return "refused: no realtime model", APIError(503, str(exc), code="backend_unavailable")
        failed: asyncio.Future[APIError] = asyncio.get_running_loop().create_future()

        def on_failure(error: APIError) -> None:
            if not failed.done():
                failed.set_result(error)

        outbox = Outbox(settings.realtime_send_queue, int(settings.realtime_send_queue_mb * 1_048_576))

        async def send_line(text: str) -> None:
            writer.write(text.encode() + b"\n")
            await writer.drain()

        def emit(event: ev.Event) -> None:
            pending.see(event)
            outbox.put_all(self._protocol.render(event))

        session = RealtimeSession(
            self._protocol.initial_config(),
            backend=self._state.backend,
            models=self._state.models,
            vad_engine=self._state.vad_engine,
            emit=emit,
            default_max_tokens=settings.max_output_tokens,
            max_commit_bytes=int(settings.realtime_max_commit_mb * 1_048_576),
            stream=stream if kind == EngineKind.STREAM else None,
            on_failure=on_failure,
        )
        sender = asyncio.create_task(outbox.run(send_line), name="realtime-tcp-sender")
        receiver = asyncio.create_task(self._receive(reader, session), name="realtime-tcp-receiver")
        finisher: asyncio.Task | None = None
        try:
            waiting: set[asyncio.Future[Any]] = {sender, receiver, failed}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                end = receiver.result()  # a reset connection raises here
                finisher = asyncio.create_task(self._finish(session, pending, outbox), name="realtime-tcp-finisher")
                waiting = {sender, finisher, failed}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if finisher in done:
                    if end is StreamEnd.IDLE:
                        idle_s = settings.realtime_idle_timeout_s
                        return end.value, APIError(
                            408, f"No audio for {idle_s:g} s; closing the session.", code="idle_timeout"
                        )
                    return end.value, None
            if failed in done:
                with suppress(TimeoutError):  # the items' error lines go out before the closing one
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await outbox.sent()
                return "transcription backend failed", failed.result()
            if outbox.overflowed:
                metrics.REALTIME_SHED.labels("slow_client").inc()
                log.warning("shedding a tcp stream: its client reads too slowly")
                return "client too slow", None
            sender.result()  # a broken connection raises here
            return "client disconnected", None
        finally:
            tasks = [t for t in (sender, receiver, finisher) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()

    async def _receive(self, reader: asyncio.StreamReader, session: RealtimeSession) -> StreamEnd:
        idle_s = self._state.settings.realtime_idle_timeout_s
        while True:
            try:  # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
                async with asyncio.timeout(idle_s):
                    data = await reader.read(READ_BYTES)
            except TimeoutError:
                return StreamEnd.IDLE
            if not data:
                return StreamEnd.EOF
            metrics.count_key_audio(session.config.audio_format.seconds(len(data)))
            await session.append(data)

    async def _finish(self, session: RealtimeSession, pending: PendingTurns, outbox: Outbox) -> None:
        """The audio ended: commit the turn in progress, then send every transcript still due."""
        with suppress(APIError):  # no turn in progress
            session.commit()
        await pending.settled()
        await outbox.sent()

    async def _send_final(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, error: APIError) -> None:
        """The closing error line. Audio the client is still sending is read and dropped until it
        ends, since closing with unread data would reset the connection and could lose the line;
        a client that is gone or stuck is not waited for."""
        with suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                writer.write(json.dumps(self._protocol.error(error)).encode() + b"\n")
                await writer.drain()
                writer.write_eof()
                while await reader.read(READ_BYTES):
                    pass
