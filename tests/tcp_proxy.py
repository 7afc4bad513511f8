"""A loopback TCP proxy in front of a vLLM that forwards every byte unchanged (HTTP and WebSocket
alike, so a realtime backend found through it streams through it too) and counts the requests for
one path, to show how often the edge asks vLLM something."""

import asyncio
import contextlib
import threading
from urllib.parse import urlsplit

from server.core.tasks import cancel_and_wait


class CountingProxy:
    def __init__(self, target: str, path: str = "/v1/models") -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._marker = f"GET {path} HTTP/".encode()
        self.count = 0
        self._connections: set[asyncio.Task] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        start = asyncio.start_server(self._connect, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _connect(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer, counted=True), self._pipe(upstream_reader, client_writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, counted: bool = False) -> None:
        tail = b""  # the end of the previous read, too short to hold a whole marker: none is counted twice
        try:
            while data := await reader.read(65536):
                if counted:
                    seen = tail + data
                    self.count += seen.count(self._marker)
                    tail = seen[-(len(self._marker) - 1) :]
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    def close(self) -> None:
        """Stop listening, end the connections still open, and stop the proxy's event loop."""
        asyncio.run_coroutine_threadsafe(self._end(), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._loop.close()

    async def _end(self) -> None:
        self._server.close()
        await cancel_and_wait(self._connections)
