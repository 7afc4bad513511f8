"""The WebSocket transport to vLLM's `/v1/realtime`: typed events in and out, typed failures."""

from types import TracebackType

import websockets
from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import ClientConnection

from server.backend.vllm_realtime.errors import RealtimeBackendError, RealtimeRefused, RealtimeUnavailable
from server.backend.vllm_realtime.protocol import Delta, Done, Error, SessionCreated, SessionUpdate, server_event


def realtime_url(backend_url: str) -> str:
    """`ws(s)://…/v1/realtime` from vLLM's OpenAI base URL (with or without its `/v1`)."""
    url = backend_url.rstrip("/")
    if not url.endswith("/v1"):
        url += "/v1"
    if url.startswith("https://"):
        return "wss://" + url.removeprefix("https://") + "/realtime"
    return "ws://" + url.removeprefix("http://") + "/realtime"


class RealtimeConnection:
    """One open `/v1/realtime` WebSocket with the model chosen (`session.update`)."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @classmethod
    async def open(
        cls, backend_url: str, model: str, *, api_key: str | None = None, timeout_s: float = 10.0
    ) -> "RealtimeConnection":
        """Connect, wait for `session.created` and choose `model`.

        vLLM does not answer `session.update`; a model it does not serve comes back later as an
        `error` event (`model_not_found`), raised by `receive` as `RealtimeRefused`.
        """
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        try:
            ws = await websockets.connect(
                realtime_url(backend_url), additional_headers=headers, open_timeout=timeout_s, max_size=None
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            raise RealtimeUnavailable(f"cannot open vLLM's /v1/realtime: {exc}") from exc
        connection = cls(ws)
        try:
            first = await connection.receive()
            if not isinstance(first, SessionCreated):
                raise RealtimeBackendError(f"vLLM's /v1/realtime began with {first.type}, not session.created")
            await connection.send(SessionUpdate(model=model))
        except BaseException:
            await connection.aclose()
            raise
        return connection

    async def send(self, event: BaseModel) -> None:
        try:
            await self._ws.send(event.model_dump_json())
        except websockets.ConnectionClosed as exc:
            raise RealtimeUnavailable(f"vLLM closed the realtime stream: {exc}") from exc

    async def receive(self) -> SessionCreated | Delta | Done:
        """The next event; an `error` event is raised as `RealtimeRefused`."""
        try:
            message = await self._ws.recv()
        except websockets.ConnectionClosed as exc:
            raise RealtimeUnavailable(f"vLLM closed the realtime stream: {exc}") from exc
        try:
            event = server_event.validate_json(message)
        except ValidationError as exc:
            raise RealtimeBackendError(f"unexpected event from vLLM's /v1/realtime: {str(message)[:200]}") from exc
        if isinstance(event, Error):
            raise RealtimeRefused(event.error, event.code)
        return event

    async def aclose(self) -> None:
        await self._ws.close()

    async def __aenter__(self) -> "RealtimeConnection":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
