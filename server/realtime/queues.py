"""The two queues of a realtime connection, both bounded so that no client can make memory grow.

`Inbox`: client messages read from the socket, waiting for the session to apply them in order.
Reading never waits for processing (so WebSocket pings and pongs keep flowing); instead the inbox
tells how far behind processing is, and the runner sheds a session that lags too far.

`Outbox`: server events waiting to be sent, serialized, bounded in count and in bytes; beyond
either bound the client is too slow and the connection is closed. It sends through a function, so
the WebSocket and the raw TCP stream share it.
"""

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sized
from contextlib import suppress
from typing import Any, Generic, TypeVar

from server.core.tasks import cancel_and_wait

Message = dict[str, Any]
Send = Callable[[str], Awaitable[None]]
F = TypeVar("F", bound=Sized)


class Inbox(Generic[F]):
    """Client frames (a message's text or bytes, or audio) in arrival order, each with its arrival
    time; their sizes (`len`) are counted while they wait."""

    def __init__(self) -> None:
        self._items: deque[tuple[F, float]] = deque()
        self._ready = asyncio.Event()
        self.bytes = 0

    def put(self, frame: F) -> None:
        self._items.append((frame, time.monotonic()))
        self.bytes += len(frame)
        self._ready.set()

    async def next(self) -> F:
        """The oldest frame; it stays counted as waiting until `done()`."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items[0][0]

    def done(self) -> None:
        frame, _ = self._items.popleft()
        self.bytes -= len(frame)

    def __len__(self) -> int:
        return len(self._items)

    def lag_s(self) -> float:
        """How long the oldest waiting frame has waited: how far processing is behind the client."""
        return time.monotonic() - self._items[0][1] if self._items else 0.0


class Outbox:
    """Server events waiting to be sent. Beyond `limit` events or `limit_bytes` of JSON waiting, the
    client is too slow: the queue is dropped and `run` returns at once, even while a send waits for
    a client that does not read, so the session is shed when it overflows, not whenever (if ever)
    the client reads again."""

    def __init__(self, limit: int, limit_bytes: int) -> None:
        self._limit = limit
        self._limit_bytes = limit_bytes
        self._items: deque[str] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._sent = asyncio.Event()
        self._sent.set()
        self._overflow = asyncio.Event()

    @property
    def overflowed(self) -> bool:
        return self._overflow.is_set()

    def put_all(self, messages: list[Message]) -> None:
        for message in messages:
            if self.overflowed:
                return
            self._sent.clear()
            text = json.dumps(message)
            if len(self._items) >= self._limit or self._bytes + len(text) > self._limit_bytes:
                self._overflow.set()
                self._items.clear()
                self._bytes = 0
            else:
                self._items.append(text)
                self._bytes += len(text)
            self._ready.set()

    async def run(self, send: Send) -> None:
        """Send events with `send` as they come, until the queue overflows or `send` raises."""
        sending = asyncio.create_task(self._send_all(send), name="realtime-send")
        overflow = asyncio.create_task(self._overflow.wait(), name="realtime-overflow")
        try:
            await asyncio.wait((sending, overflow), return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait((sending, overflow))
        if sending.done() and not sending.cancelled() and (error := sending.exception()) is not None:
            raise error  # the socket broke

    async def _send_all(self, send: Send) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._items and not self.overflowed:
                text = self._items.popleft()
                self._bytes -= len(text)
                await send(text)
            self._sent.set()

    async def sent(self) -> None:
        """Wait until every event put so far is sent (by `run`)."""
        await self._sent.wait()

    async def flush(self, timeout_s: float) -> None:
        """`sent`, waiting at most `timeout_s`."""
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.sent()
