"""The raw TCP stream (`TCP_PORT`), for the original voice stack's clients and for
`sox … -t raw - | nc -N HOST PORT`: the client sends PCM16 16 kHz mono bytes, and gets one JSON
line per turn, the `/ws` transcription message (`protocols/simple.py`), or an error line.

When API keys are required, the client's first line is its key. Each connection runs a
`RealtimeSession` (`runner`) with the app's shared VAD engine and takes one of the app's realtime
session slots; the realtime limits apply (idle time, session length, waiting lines).

Nothing is lost at the end of the stream: when the client stops sending (end of file, or idle
time), the turn in progress is committed and every pending transcript is sent before the server
closes. A half sample at the end is dropped; a client that disconnects abruptly has its session,
tasks and vLLM requests cancelled.

Each connection counts in the edge's connection caps (`server.core.connections`) by its peer
address from its accept to its close; one beyond a cap gets a `too_many_connections` error line at
once and is closed (after reading what it sends for at most `TURNED_AWAY_LINGER_S`).
"""

import asyncio
import json
import logging
import time
from contextlib import suppress

from server.core import metrics
from server.core.auth import Identity
from server.core.connections import ConnectionTable
from server.core.errors import APIError
from server.core.tasks import cancel_and_wait
from server.realtime import events as ev
from server.realtime.admission import SessionsFull, admitted
from server.realtime.protocols.simple import SimpleProtocol
from server.realtime.runner import CLOSE_TIMEOUT_S, End, Live, Outcome, read_audio, run_session
from server.realtime.services import RealtimeServices

READ_BYTES = 65536
TURNED_AWAY_LINGER_S = 1.0
log = logging.getLogger("edge.realtime")


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


class _Stream:
    """One TCP connection, the raw stream's side of the runner's seam: audio bytes in, JSON lines
    out. Nothing is lost at the end of the client's audio: the turn in progress is committed and
    every transcript still due is sent before the session ends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self._writer = writer
        self.protocol = SimpleProtocol()
        self.pending = PendingTurns()

    async def send_text(self, text: str) -> None:
        self._writer.write(text.encode() + b"\n")
        await self._writer.drain()

    async def serve_input(self, live: Live) -> Outcome:
        ended = await read_audio(live, self._receive)
        with suppress(APIError):  # no turn in progress
            live.session.commit()
        await self.pending.settled()
        await live.outbox.sent()
        return ended

    def on_event(self, event: ev.Event) -> None:
        self.pending.see(event)

    async def _receive(self) -> bytes | None:
        return await self.reader.read(READ_BYTES) or None

    async def send_final(self, error: APIError) -> None:
        """The closing error line. Audio the client is still sending is read and dropped until it
        ends, since closing with unread data would reset the connection and could lose the line;
        a client that is gone or stuck is not waited for."""
        with suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                self._writer.write(json.dumps(self.protocol.error(error)).encode() + b"\n")
                await self._writer.drain()
                self._writer.write_eof()
                while await self.reader.read(READ_BYTES):
                    pass


class TCPStreamServer:
    """Serves raw PCM16 streams on one TCP port with the app's realtime services.

    When the app's keys are required, the client's first line is its API key (an ephemeral secret
    is not accepted: it is for browsers); the key's name gets the usage metrics and its
    `API_KEY_MAX_SESSIONS` applies, as on the WebSocket routes.
    """

    def __init__(self, services: RealtimeServices, connections: ConnectionTable) -> None:
        self._services = services
        self._connections = connections
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
        await cancel_and_wait(self._clients)
        if self._server is not None:
            await self._server.wait_closed()

    def _client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        refused = self._connections.open(writer.transport, peer[0] if peer else None)
        if refused is None:
            serving = self._serve(reader, writer)
        else:
            serving = self._turn_away(reader, writer, refused)
        task = asyncio.create_task(serving, name="realtime-tcp-connection")
        self._clients.add(task)
        task.add_done_callback(self._clients.discard)

    async def _turn_away(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, refused: APIError) -> None:
        """The error line, then what the client sends is dropped until it ends (for a short time),
        so that closing does not reset the connection before the line is read."""
        with suppress(Exception):
            async with asyncio.timeout(TURNED_AWAY_LINGER_S):
                writer.write(json.dumps(SimpleProtocol().error(refused)).encode() + b"\n")
                writer.write_eof()
                while await reader.read(READ_BYTES):
                    pass
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        started = time.perf_counter()
        stream = _Stream(reader, writer)
        why = "server stopping"
        try:
            why, closing = await self._admit_and_run(stream)
            if closing is not None:
                await stream.send_final(closing)
        except (ConnectionError, asyncio.IncompleteReadError):
            why = "client disconnected"
        except Exception:
            log.exception("tcp stream session failed")
            why = "internal error"
        finally:
            writer.close()
            self._connections.release(writer.transport)
            with suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await writer.wait_closed()
            log.info(
                "tcp stream from %s ended (%s) after %.1f s, %d turns",
                peer,
                why,
                time.perf_counter() - started,
                stream.pending.turns,
            )

    async def _admit_and_run(self, stream: _Stream) -> tuple[str, APIError | None]:
        """Why the session ended, and the error line to send last (if any). A broken connection,
        or a bug, raises."""
        identity = await self._identify(stream.reader)
        if identity is None:
            refusal = APIError(401, "The first line must be a valid API key.", code="invalid_api_key")
            return "refused: " + refusal.message, refusal
        services = self._services
        try:
            with admitted(services.slots, services.keys.sessions, identity):
                metrics.usage_key.set(identity.name)
                outcome = await run_session(stream, stream.protocol, services)
        except SessionsFull as full:
            return "refused: " + full.message, full
        if outcome.exc is not None:
            raise outcome.exc  # a reset connection or a bug: `_serve` tells them apart
        if outcome.end is End.SLOW_CLIENT:
            metrics.REALTIME_SHED.labels("slow_client").inc()
            log.warning("shedding a tcp stream: its client reads too slowly")
        return outcome.end.value, outcome.error

    async def _identify(self, reader: asyncio.StreamReader) -> Identity | None:
        """Who the client is: with keys required, the API key of its first line (None if missing
        or wrong); without, everyone is let in."""
        keys = self._services.keys
        if not keys.required:
            return keys.check_bearer(None)
        try:
            async with asyncio.timeout(self._services.settings.realtime_idle_timeout_s):
                line = await reader.readline()
            key = line.decode("utf-8").strip()
        except (TimeoutError, ValueError):  # no line in time, a line too long, or not UTF-8
            return None
        return keys.check_bearer(key)
