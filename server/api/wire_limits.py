"""uvicorn's HTTP and WebSocket protocols, with what they lack against hostile or broken clients.

Before the app sees a request, uvicorn's own code answers the client, and there it falls short:
- httptools has no bound on a request's line and headers: one connection sending headers without
  end grows the edge's memory without end, and one sending them a byte at a time (or nothing at
  all after connecting) holds its connection for ever. Here a request whose head passes
  `MAX_HEAD_BYTES` gets a 431, one whose head takes longer than `HEAD_TIMEOUT_S` a 408, and the
  connection is closed; a new connection that sends nothing for as long is closed.
- Nor is there a bound on a request's body once its head is in: one sent a byte at a time holds
  its connection and its request's task for as long as the client likes. Here a body must arrive
  within `BODY_GRACE_S` plus one second per `BODY_MIN_KB_PER_S` kB it brings (a slow but steady
  upload of any size passes); one later gets a 408 and the connection is closed.
- A handshake the `websockets` parser refuses (a header line over 8 kB, over 128 headers) is never
  answered: uvicorn leaves the connection open until the client gives up. Here it gets a 400.
- Its own errors are plain text; here they are in OpenAI's shape, like every error of the app.
- A WebSocket whose client stops reading stays open after its session ends (the transport waits
  to deliver what is buffered): one that has not gone some seconds after the session is aborted.
- A WebSocket its keepalive closes (no pong in `REALTIME_PING_TIMEOUT_S`) ends with close code
  1005 for the app, like any lost connection; here the reason gets its own log line.
- Nor is there a bound on open connections (uvicorn's `limit_concurrency` answers a request, not a
  connection, in plain text: an idle or hostile connection is held all the same). Here each
  connection is counted in the app's `ConnectionTable` (`server.core.connections`, the caps on all
  and per client address) from its accept to its close, a WebSocket's too; one beyond a cap gets a
  503 at once, before it sends anything, and then an address named by its request (a trusted
  proxy header) the same. A turned-away connection is half-closed and read (and what it sends
  dropped) until the client closes or `TURNED_AWAY_LINGER_S` passes: closing with unread bytes
  would reset it, and the client might never see the 503. A kept-alive connection between
  requests, and a new one that has sent nothing yet, is idle: the table may close it for room.
"""

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from server.core.connections import STATE_KEY, ConnectionTable
from server.core.errors import APIError
from server.core.metrics import WIRE_TIMEOUTS
from server.core.settings import Settings

log = logging.getLogger("edge.wire")

MAX_HEAD_BYTES = 64 * 1024
"""A request line and its headers together: far above what any client or proxy sends (nginx allows
32 kB), far below what would matter for memory."""

HEAD_TIMEOUT_S = 60.0
"""How long a request's line and headers may take to arrive once its first byte has, and a new
connection may wait before its first request begins (nginx's default too); between requests on a
kept-alive connection, uvicorn's keep-alive timeout applies."""

ABORT_AFTER_S = 5.0
"""How long after the close handshake's own timeout a WebSocket whose client does not read is dropped."""

TURNED_AWAY_LINGER_S = 1.0
"""How long a connection turned away at a cap is read from (and what it sends dropped) before it is closed."""

REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True)
class BodyDeadline:
    """How long a request's body may take: `grace_s`, plus one second for every `min_bytes_per_s`
    bytes that arrived (Apache's mod_reqtimeout `body=…,MinRate=…`). A client stays within it as long
    as its average rate since the head stays above `min_bytes_per_s` (or it finishes within the grace)."""

    grace_s: float
    min_bytes_per_s: float

    @classmethod
    def of(cls, settings: Settings) -> "BodyDeadline":
        return cls(settings.body_grace_s, settings.body_min_kb_per_s * 1024)


DEFAULT_BODY_DEADLINE = BodyDeadline.of(Settings.model_construct())
"""The settings' defaults, for a server not configured from settings (the health port)."""


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "unknown peer"


def error_response(error: APIError) -> bytes:
    """A complete HTTP/1.1 response carrying `error` in OpenAI's shape, closing the connection."""
    body = json.dumps(error.body()).encode()
    extra = b"".join(b"%s: %s\r\n" % (name.lower().encode(), value.encode()) for name, value in error.headers.items())
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%sconnection: close\r\n\r\n" % (
        error.status,
        REASONS[error.status],
        len(body),
        extra,
    )
    return head + body


def _table(app_state: dict[str, Any]) -> ConnectionTable | None:
    """The app's connection table (none for a server whose app has no lifespan: the health port)."""
    table = app_state.get(STATE_KEY)
    return table if isinstance(table, ConnectionTable) else None


def client_address(headers: list[tuple[bytes, bytes]], header: bytes) -> str | None:
    """The client address a trusted proxy's header names: the last one of the header's last line
    (the proxy appends the peer it saw; what comes before, the client may have written)."""
    values = [value for name, value in headers if name == header]
    if not values:
        return None
    last = values[-1].decode("latin-1").rsplit(",", 1)[-1].strip()
    return last or None


def http_protocol(settings: Settings) -> Callable[..., "HttpProtocol"]:
    """uvicorn's `http` option: `HttpProtocol` with the body deadline of `settings` (a partial, which
    pickles: uvicorn sends its config to the worker processes it starts)."""
    return functools.partial(HttpProtocol, body_deadline=BodyDeadline.of(settings))


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on each request's head (its size and its time) and on
    the time its body takes.

    One timer per connection, moved from deadline to deadline: the head's while a head arrives (or
    the connection waits for its first request), then the body's. The body's is armed only when a
    read ends with the body still incomplete and is moved only when it fires, so a read costs an
    addition, and a request whose body comes with its head costs no timer at all.

    The connection is counted in the app's `ConnectionTable`, idle while it waits for a request.
    """

    def __init__(self, *args: Any, body_deadline: BodyDeadline = DEFAULT_BODY_DEADLINE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._body_deadline = body_deadline
        # The body arriving now, if any: when its head was in, since when its clock runs, the bytes
        # that came before that, and all its bytes so far.
        self._body_began = 0.0
        self._body_since: float | None = None
        self._body_base = 0
        self._body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Bytes received since the request began, None once its head is in. A kept-alive connection's
        # next request is counted from the read after the one it began in: the bound stays within one read.
        self._head_bytes: int | None = 0
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(HEAD_TIMEOUT_S, self._no_request)
        self._turned_away = False
        self._connections = _table(self.app_state)
        if self._connections is not None:
            peer = None if self._connections.client_header else self.client[0] if self.client else None
            if (refused := self._connections.open(transport, peer)) is not None:
                self._turn_away(refused)
            else:
                self._connections.idle(transport, self._close_idle, fresh=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if self._connections is not None:
            self._connections.release(self.transport)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing() or self._turned_away:
            return
        if self._head_bytes is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._head_bytes is not None and self._head_bytes > MAX_HEAD_BYTES:
            message = f"The request line and headers are larger than {MAX_HEAD_BYTES} bytes."
            self._refuse(APIError(431, message, code="headers_too_large"))
        elif self._body_since is not None and self._timer is None and not self.transport.is_closing():
            self._timer = self.loop.call_at(self._body_since + self._body_deadline.grace_s, self._body_due)

    def on_message_begin(self) -> None:
        if self._turned_away:  # the rest of what came in the read that turned it away
            return
        if self._connections is not None:
            self._connections.busy(self.transport)
        super().on_message_begin()
        if self._head_bytes is None:  # the next request on a kept-alive connection
            self._head_bytes = 0
        self._stop_timer()
        self._timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)

    def on_headers_complete(self) -> None:
        if self._turned_away:
            return
        self._head_bytes = None
        self._stop_timer()
        table = self._connections
        if table is not None and table.client_header is not None:
            named = client_address(self.headers, table.client_header)
            address = named or (self.client[0] if self.client else None)
            if address is not None and (refused := table.move(self.transport, address)) is not None:
                self._turn_away(refused)
                return
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:  # an HTTP request (a WebSocket upgrade has no cycle): its body is due
            self._body_began = self._body_since = self.loop.time()
            self._body_base = self._body_bytes = 0

    def on_body(self, body: bytes) -> None:
        if self._turned_away:
            return
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._turned_away:
            return
        self._body_since = None  # the app may take as long as it needs from here
        self._stop_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._connections is not None and not self.transport.is_closing() and not self.pipeline:
            self._connections.idle(self.transport, self._close_idle)

    def handle_websocket_upgrade(self) -> None:
        if self.transport.is_closing() or self._turned_away:
            return
        # The WebSocket protocol takes over the connection and releases it from the table.
        super().handle_websocket_upgrade()

    def _close_idle(self) -> None:
        """Closed for room at a connection cap, between requests (or before the first)."""
        self._stop_timer()
        self.transport.close()

    def _turn_away(self, refused: APIError) -> None:
        """Answer at once (a connection beyond a cap, a request refused on the wire), then read and
        drop what comes until the client goes (or for `TURNED_AWAY_LINGER_S`), so that closing does
        not reset the connection before the client reads its answer."""
        self._turned_away = True
        self._stop_timer()
        self.transport.write(error_response(refused))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._timer = self.loop.call_later(TURNED_AWAY_LINGER_S, self.transport.close)
        else:  # TLS
            self.transport.close()

    def _no_request(self) -> None:
        """Connected, then no request began: nothing to answer."""
        self._timer = None
        if not self.transport.is_closing():
            WIRE_TIMEOUTS.labels("idle").inc()
            log.info("closing a connection from %s: no request in %g s", _peer(self.client), HEAD_TIMEOUT_S)
            self.transport.close()

    def _head_too_slow(self) -> None:
        self._timer = None
        WIRE_TIMEOUTS.labels("head").inc()
        message = f"The request line and headers did not arrive within {HEAD_TIMEOUT_S:g} s."
        self._refuse(APIError(408, message, code="request_timeout"))

    def _body_due(self) -> None:
        """The body's deadline as last computed: move it by what arrived since, or end the request."""
        self._timer = None
        if self._body_since is None or self.transport.is_closing():
            return
        now = self.loop.time()
        rate = self._body_deadline.min_bytes_per_s
        if self.flow.read_paused or self.cycle.waiting_for_100_continue:
            # The edge holds the body back (the app has not taken what came, or not asked for it
            # yet): the client is not late. It keeps the time it earned and gets a grace from now.
            self._body_since = max(self._body_since + (self._body_bytes - self._body_base) / rate, now)
            self._body_base = self._body_bytes
        due = self._body_since + self._body_deadline.grace_s + (self._body_bytes - self._body_base) / rate
        if now < due:
            self._timer = self.loop.call_at(due, self._body_due)
        else:
            self._body_too_slow()

    def _body_too_slow(self) -> None:
        WIRE_TIMEOUTS.labels("body").inc()
        cycle = self.cycle
        declared = dict(cycle.scope["headers"]).get(b"content-length")
        of = f" of {declared.decode('latin-1')}" if declared else ""
        arrived = f"{self._body_bytes}{of} bytes in {self.loop.time() - self._body_began:.1f} s"
        rule = f"{self._body_deadline.grace_s:g} s, then at least {self._body_deadline.min_bytes_per_s / 1024:g} kB/s"
        request = f"{cycle.scope['method']} {cycle.scope['path']}"
        if cycle.response_started:
            # An answer (an early 413, say) is on its way: a 408 after it would corrupt it.
            log.warning(
                "closing the connection of %s: the body of %s is too slow (%s; allowed: %s) and the app has answered",
                _peer(self.client),
                request,
                arrived,
                rule,
            )
            self.transport.close()
            return
        # What the app does from here goes nowhere: its receive() says the client has gone.
        cycle.disconnected = True
        cycle.message_event.set()
        message = f"The request body arrived too slowly: {arrived} (allowed: {rule} on average)."
        self._refuse(APIError(408, message, code="request_timeout"), request)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, error: APIError, request: str = "a request") -> None:
        if self.transport.is_closing():
            return
        log.warning("refusing %s from %s: %s", request, _peer(self.client), error.message)
        # A client still sending (a body that dribbles) would get a reset, and could lose the
        # answer, if the connection closed with its bytes unread: linger as for a cap, no longer
        # counted against the caps (the linger is bounded in time).
        if self._connections is not None:
            self._connections.release(self.transport)
        self._turn_away(error)

    def send_400_response(self, msg: str) -> None:
        if self.transport.is_closing() or self._turned_away:  # answered already
            return
        self.transport.write(error_response(APIError(400, msg, code="invalid_http_request")))
        self.transport.close()


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets protocol that answers a handshake it cannot parse, drops a client that
    does not read once its session is over, and says when its keepalive ends a connection; its
    connection stays counted in the app's `ConnectionTable` until it is lost."""

    def connection_lost(self, exc: Exception | None) -> None:
        if (table := _table(self.app_state)) is not None:
            table.release(self.transport)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_initiated and not self.transport.is_closing():
            cause = self.conn.handshake_exc.__cause__ or self.conn.handshake_exc
            log.warning("refusing a WebSocket handshake from %s: %s", _peer(self.client), cause)
            message = f"Invalid WebSocket handshake: {cause}."
            self.transport.write(error_response(APIError(400, message, code="invalid_handshake")))
            self.handshake_initiated = self.handshake_complete = self.close_sent = True
            self.transport.close()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        # The connection is closing now (or after the close handshake's timeout), but a transport
        # only closes once the client has read what is still buffered for it.
        self.loop.call_later(self.close_timeout + ABORT_AFTER_S, self._abort_if_unread)

    def _abort_if_unread(self) -> None:
        if not self.disconnected:
            log.warning(
                "aborting the WebSocket of %s: its session ended %g s ago and it has not read what was sent to it",
                _peer(self.client),
                self.close_timeout + ABORT_AFTER_S,
            )
            self.transport.abort()

    def keepalive_timeout(self) -> None:
        if not (self.close_sent or self.transport.is_closing()):
            log.warning(
                "closing the WebSocket from %s: no pong within %g s of a ping (1011 keepalive ping timeout)",
                _peer(self.client),
                self.ping_timeout,
            )
        super().keepalive_timeout()
