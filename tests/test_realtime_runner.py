"""The session runner on its own, through its seam: an in-memory transport, no vLLM and no VAD
model, so every way a session ends is checked without a server."""

import asyncio
import json
from collections.abc import Callable
from typing import Any, cast

import pytest

from server.core.auth import KeyRing
from server.core.errors import APIError
from server.core.settings import Settings
from server.core.shared_count import SessionSlots
from server.core.tasks import cancel_and_wait
from server.realtime.engines import EngineKind
from server.realtime.events import Event
from server.realtime.protocols.simple import SimpleProtocol
from server.realtime.runner import End, Frame, Live, Outcome, read_audio, read_messages, run_session
from server.realtime.services import RealtimeServices
from server.realtime.session import RealtimeSession


class Engines:
    def __init__(self, refusal: str | None = None) -> None:
        self._refusal = refusal

    async def select(self) -> tuple[EngineKind, None]:
        if self._refusal is not None:
            raise RuntimeError(self._refusal)
        return EngineKind.TURNS, None


class VADStream:
    async def feed(self, samples: object) -> list[object]:
        return []

    def close(self) -> None:
        pass


class VAD:
    def open_stream(self, params: object = None) -> VADStream:
        return VADStream()


def services(engines: Engines | None = None, **settings: Any) -> RealtimeServices:
    return RealtimeServices(
        settings=Settings(_env_file=None, **settings),  # type: ignore[call-arg]
        backend=cast(Any, None),
        models=cast(Any, None),
        vad_engine=cast(Any, VAD()),
        engines=cast(Any, engines or Engines()),
        slots=SessionSlots(1),
        keys=KeyRing({}, b"signing key"),
    )


class Client:
    """A transport whose client's messages are put in `incoming` (None: it leaves) and whose
    server messages land in `sent`; `send` replaces the sending."""

    def __init__(self, send: Callable[[str], Any] | None = None, *, audio: bool = False) -> None:
        self.incoming: asyncio.Queue[Any] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self._send = send
        self._audio = audio

    async def send_text(self, text: str) -> None:
        if self._send is not None:
            await self._send(text)
        self.sent.append(json.loads(text))

    async def serve_input(self, live: Live) -> Outcome:
        if self._audio:
            return await read_audio(live, self._receive_audio)
        return await read_messages(live, self._receive)

    def on_event(self, event: Event) -> None:
        pass

    async def _receive(self) -> Frame | None:
        frame: Frame | None = await self.incoming.get()
        return frame

    async def _receive_audio(self) -> bytes | None:
        data: bytes | None = await self.incoming.get()
        return data


class StuckProtocol(SimpleProtocol):
    """Its first message is never done with."""

    async def handle(self, text: str, session: RealtimeSession) -> list[dict[str, Any]]:
        await asyncio.Event().wait()
        return []


class BrokenProtocol(SimpleProtocol):
    async def handle(self, text: str, session: RealtimeSession) -> list[dict[str, Any]]:
        raise RuntimeError("a bug")


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def test_cancel_and_wait_ends_every_task_and_leaves_their_results() -> None:
    async def fail() -> None:
        raise ValueError("kept")

    async def answer() -> int:
        return 42

    sleeping = asyncio.create_task(asyncio.sleep(60))
    failing = asyncio.create_task(fail())
    answering = asyncio.create_task(answer())
    await asyncio.sleep(0)
    await cancel_and_wait([sleeping, failing, answering])
    assert sleeping.cancelled()
    assert isinstance(failing.exception(), ValueError)
    assert answering.result() == 42


async def test_no_realtime_model_refuses_the_session() -> None:
    outcome = await run_session(Client(), SimpleProtocol(), services(Engines("no realtime model here")))
    assert outcome.end is End.NO_ENGINE
    assert outcome.error is not None and outcome.error.code == "backend_unavailable"
    assert outcome.error.message == "no realtime model here"


async def test_messages_are_applied_in_order_and_binary_ones_refused() -> None:
    client = Client()
    running = asyncio.create_task(run_session(client, SimpleProtocol(), services()))
    client.incoming.put_nowait(b"\x00\x01")
    client.incoming.put_nowait('{"type": "hello"}')
    await until(lambda: len(client.sent) == 2)
    client.incoming.put_nowait(None)
    outcome = await running
    assert outcome == Outcome(End.INPUT_ENDED)
    assert [message["code"] for message in client.sent] == ["invalid_json", "unknown_event"]


@pytest.mark.parametrize(
    ("audio", "message"),
    [(False, "No client event for 0.2 s; closing the session."), (True, "No audio for 0.2 s; closing the session.")],
)
async def test_an_idle_client_ends_the_session(audio: bool, message: str) -> None:
    outcome = await run_session(Client(audio=audio), SimpleProtocol(), services(realtime_idle_timeout_s=0.2))
    assert outcome.end is End.IDLE
    assert outcome.error is not None and (outcome.error.code, outcome.error.message) == ("idle_timeout", message)


async def test_a_message_too_large_ends_the_session() -> None:
    client = Client()
    client.incoming.put_nowait("x" * 200)
    outcome = await run_session(client, SimpleProtocol(), services(realtime_max_message_mb=0.0001))
    assert outcome.end is End.TOO_LARGE
    assert outcome.error is not None and outcome.error.code == "message_too_large"


async def test_a_session_whose_processing_lags_is_shed() -> None:
    client = Client()
    running = asyncio.create_task(run_session(client, StuckProtocol(), services(realtime_max_lag_s=0.1)))
    client.incoming.put_nowait("{}")
    await asyncio.sleep(0.3)
    client.incoming.put_nowait("{}")
    outcome = await running
    assert outcome.end is End.LAGGING
    assert outcome.error is not None and outcome.error.code == "session_lagging"
    assert "oldest waiting message waited" in outcome.error.message


async def test_a_session_ends_at_its_maximum_length() -> None:
    outcome = await run_session(Client(), SimpleProtocol(), services(realtime_max_session_s=0.2))
    assert outcome.end is End.EXPIRED
    assert outcome.error is not None and outcome.error.code == "session_expired"


async def test_a_client_too_slow_to_read_is_shed() -> None:
    async def stall(text: str) -> None:
        await asyncio.Event().wait()

    client = Client(stall)
    for _ in range(3):
        client.incoming.put_nowait(b"refused")
    outcome = await run_session(client, SimpleProtocol(), services(realtime_send_queue=1))
    assert outcome == Outcome(End.SLOW_CLIENT)


async def test_a_broken_connection_ends_the_session() -> None:
    broken = ConnectionResetError("gone")

    async def fail(text: str) -> None:
        raise broken

    client = Client(fail)
    client.incoming.put_nowait(b"refused")
    outcome = await run_session(client, SimpleProtocol(), services())
    assert outcome == Outcome(End.CLIENT_GONE, exc=broken)


async def test_a_bug_in_processing_is_reported_with_what_it_raised() -> None:
    client = Client()
    client.incoming.put_nowait("{}")
    outcome = await run_session(client, BrokenProtocol(), services())
    assert outcome.end is End.CRASHED
    assert isinstance(outcome.exc, RuntimeError) and not isinstance(outcome.exc, APIError)
