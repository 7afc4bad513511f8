"""The open connections of one edge process, whatever they carry (HTTP, WebSocket, the raw TCP
stream), with a cap on all of them (`MAX_CONNECTIONS`) and one per client address
(`MAX_CONNECTIONS_PER_CLIENT`).

A connection is counted from the moment it is accepted until it is closed. At a cap, an idle
connection is closed to make room: the kept-alive HTTP connection idle longest between requests, or
else the oldest one that has sent nothing since its accept `FRESH_GRACE_S` ago (the grace spares a
client whose request has come but is not read yet, as on an edge that is busy with a flood); when
there is none, the new connection is turned away
with `TooManyConnections` (a 503 with `Retry-After`, said by its protocol). Behind a load balancer
every peer is the balancer: with `CLIENT_ADDRESS_HEADER` set, an HTTP connection counts for no
client until its request names one in that header, and for the address its latest request names.

Refusals and idle closes come in floods, so their log lines are throttled: one a second at most,
each saying how many it stands for; the metrics count each one.
"""

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable

from server.core import metrics
from server.core.errors import APIError
from server.core.settings import Settings

log = logging.getLogger("edge.connections")

STATE_KEY = "edge_connections"
"""Where the app's lifespan state (uvicorn's `app_state`) holds the process's `ConnectionTable`."""

RETRY_AFTER_S = 1
FRESH_GRACE_S = 10.0
LOG_EVERY_S = 1.0

Close = Callable[[], None]


class IdleQueues:
    """Idle connections in the order they became idle: kept-alive ones, and new ones that have sent
    nothing yet (with when they were accepted)."""

    def __init__(self) -> None:
        self.kept_alive: OrderedDict[Hashable, Close] = OrderedDict()
        self.fresh: OrderedDict[Hashable, tuple[Close, float]] = OrderedDict()

    def __bool__(self) -> bool:
        return bool(self.kept_alive or self.fresh)

    def add(self, key: Hashable, close: Close, fresh_since: float | None) -> None:
        if fresh_since is None:
            self.kept_alive[key] = close
        else:
            self.fresh[key] = (close, fresh_since)

    def discard(self, key: Hashable) -> bool:
        return self.kept_alive.pop(key, None) is not None or self.fresh.pop(key, None) is not None

    def first(self, now: float) -> Hashable | None:
        """The connection to close for room, if any."""
        if self.kept_alive:
            return next(iter(self.kept_alive))
        if self.fresh:
            key, (_, since) = next(iter(self.fresh.items()))
            if now - since >= FRESH_GRACE_S:
                return key
        return None

    def close(self, key: Hashable) -> Close:
        if key in self.kept_alive:
            return self.kept_alive[key]
        return self.fresh[key][0]


class TooManyConnections(APIError):
    """A connection beyond a cap: a 503 in OpenAI's shape, with `Retry-After`."""

    def __init__(self, message: str) -> None:
        super().__init__(503, message, code="too_many_connections", headers={"Retry-After": str(RETRY_AFTER_S)})


class ThrottledLog:
    """A warning line at most every `LOG_EVERY_S`, counting the events it stands for."""

    def __init__(self) -> None:
        self._logged_at = float("-inf")
        self._unlogged = 0

    def warning(self, message: str, *args: object) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            log.warning(message + " (%d such since the last line)", *args, self._unlogged)
            self._logged_at = now
            self._unlogged = 0


class ConnectionTable:
    """Open connections by key (their transport), each with the client address it counts for.

    Idle connections are kept in the order they became idle, over all and per address, so that the
    one to close for room is found at once.
    """

    def __init__(
        self,
        max_open: int,
        max_per_client: int,
        client_header: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_open = max_open
        self.max_per_client = max_per_client
        self.client_header = client_header.strip().lower().encode("latin-1") if client_header else None
        self._address: dict[Hashable, str | None] = {}
        self._per_address: Counter[str] = Counter()
        self._clock = clock
        self._idle = IdleQueues()
        self._idle_by_address: dict[str, IdleQueues] = {}
        self._refusals = ThrottledLog()
        self._evictions = ThrottledLog()

    @classmethod
    def of(cls, settings: Settings) -> "ConnectionTable":
        return cls(settings.max_connections, settings.max_connections_per_client, settings.client_address_header)

    def __len__(self) -> int:
        return len(self._address)

    def count(self, address: str) -> int:
        return self._per_address[address]

    def open(self, key: Hashable, address: str | None) -> TooManyConnections | None:
        """Count a new connection from `address` (None: not known yet), or say why it is refused."""
        if len(self._address) >= self.max_open and not self._close_idle(None):
            return self._refuse(
                address, "process", f"Too many open connections (at most {self.max_open}); try again later."
            )
        if address is not None and (refused := self._room_for(address)) is not None:
            return refused
        self._address[key] = address
        if address is not None:
            self._per_address[address] += 1
        metrics.CONNECTIONS_OPEN.inc()
        return None

    def move(self, key: Hashable, address: str) -> TooManyConnections | None:
        """Count an open connection for `address` from now on (as its request names it), or say why
        it is refused (it then still counts where it did)."""
        if key not in self._address or self._address[key] == address:
            return None
        if (refused := self._room_for(address)) is not None:
            return refused
        self._uncount(key)
        self._address[key] = address
        self._per_address[address] += 1
        return None

    def idle(self, key: Hashable, close: Close, *, fresh: bool = False) -> None:
        """The connection waits for a request (`fresh`: its first, since its accept now): `close`
        may end it to make room for a new one."""
        if key not in self._address:
            return
        self.busy(key)
        since = self._clock() if fresh else None
        self._idle.add(key, close, since)
        if (address := self._address[key]) is not None:
            self._idle_by_address.setdefault(address, IdleQueues()).add(key, close, since)

    def busy(self, key: Hashable) -> None:
        """The connection serves a request (or a WebSocket, or a stream): it is not closed for room."""
        if self._idle.discard(key) and (address := self._address.get(key)) is not None:
            by_address = self._idle_by_address[address]
            by_address.discard(key)
            if not by_address:
                del self._idle_by_address[address]

    def release(self, key: Hashable) -> None:
        """The connection is closed (again, or never counted: nothing happens)."""
        if key not in self._address:
            return
        self.busy(key)
        self._uncount(key)
        del self._address[key]
        metrics.CONNECTIONS_OPEN.dec()

    def _uncount(self, key: Hashable) -> None:
        if (address := self._address[key]) is not None:
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]

    def _room_for(self, address: str) -> TooManyConnections | None:
        if self._per_address[address] < self.max_per_client or self._close_idle(address):
            return None
        message = f"Too many open connections from this client (at most {self.max_per_client}); try again later."
        return self._refuse(address, "client", message)

    def _close_idle(self, address: str | None) -> bool:
        """Close an idle connection (of `address`, or of all) for room; False if there is none."""
        idle = self._idle if address is None else self._idle_by_address.get(address)
        if not idle or (key := idle.first(self._clock())) is None:
            return False
        close = idle.close(key)
        self.release(key)
        metrics.IDLE_CONNECTIONS_CLOSED.inc()
        self._evictions.warning(
            "closing an idle connection to make room for a new one (at most %d open, %d per client)",
            self.max_open,
            self.max_per_client,
        )
        close()
        return True

    def _refuse(self, address: str | None, cap: str, message: str) -> TooManyConnections:
        metrics.CONNECTIONS_REFUSED.labels(cap).inc()
        self._refusals.warning("refusing a connection from %s: %s", address or "a client", message)
        return TooManyConnections(message)
