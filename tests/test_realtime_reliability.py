"""Realtime sessions never fail silently: hostile input answers an `error` and the session goes on;
memory is bounded (send queue in bytes, manual-commit buffer); a closed session frees its slot at
once; and a session whose processing falls behind is shed with an explicit error, a metric and a
log line, never by a keepalive timeout."""

import asyncio
import json
import logging
import socket

import pytest
from realtime_helpers import chunks, metric_value, slow_vad, wait_until, ws_url
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import EdgeServer

GA_URL = "/v1/realtime?intent=transcription"
SILENCE_100MS = next(chunks(bytes(4800), 4800))  # 0.1 s of PCM16 at 24 kHz


async def closed_with(ws, timeout: float = 30) -> tuple[int, str, list[dict]]:
    """Read until the server closes; return the close code, reason and the events before it."""
    events = []
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                events.append(json.loads(await ws.recv()))
    assert closed.value.rcvd is not None, "the connection broke without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason, events


async def receive(ws, timeout: float = 15) -> dict:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


def append(audio: str) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio})


def update(**transcription: object) -> str:
    return json.dumps(
        {"type": "session.update", "session": {"type": "transcription", "audio": {"input": transcription}}}
    )


async def test_deeply_nested_json_answers_an_error(edge: EdgeServer) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    async with connect(f"{ws_url(edge)}{GA_URL}") as ws:
        await receive(ws)
        await ws.send(nested)
        error = await receive(ws)
        assert error["type"] == "error" and error["error"]["code"] == "invalid_json"
        await ws.send(update(transcription={"language": "en"}))
        assert (await receive(ws))["type"] == "session.updated"
    async with connect(f"{ws_url(edge)}/ws") as ws:
        await ws.send(nested)
        error = await receive(ws)
        assert error["type"] == "error" and error["code"] == "invalid_json"


async def test_errors_do_not_echo_long_client_text(edge: EdgeServer) -> None:
    long_type = "x" * 200_000
    async with connect(f"{ws_url(edge)}{GA_URL}") as ws:
        await receive(ws)
        await ws.send(json.dumps({"type": long_type, "event_id": long_type}))
        async with asyncio.timeout(15):
            raw = await ws.recv()
    error = json.loads(raw)["error"]
    assert error["code"] == "unknown_event" and "xxxx" in error["message"]
    assert len(raw) < 2000


async def test_send_queue_is_bounded_by_bytes(make_edge) -> None:
    """Each `session.updated` repeats the session, here a 0.4 MB prompt; the client does not read
    (its library buffers one message, its socket 64 kB; no compression, which would shrink the
    prompt to nothing), so the replies pile up beyond the 2 MB queue: far fewer than
    `REALTIME_SEND_QUEUE` events. The session is shed while the client still reads nothing (it
    starts reading only once the shed is counted; the edge stops reading it then, so its sends may
    block), then the client gets the close."""
    edge = make_edge(realtime_send_queue_mb=2)
    shed = metric_value("edge_realtime_sessions_shed_total", reason="slow_client")
    prompt = "p" * 400_000
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # fixed: no autotuning to megabytes
    sock.connect(("127.0.0.1", edge.settings.port))
    async with connect(f"{ws_url(edge)}{GA_URL}", sock=sock, max_queue=1, compression=None) as ws:

        async def flood() -> None:
            for _ in range(60):
                await ws.send(update(transcription={"prompt": prompt}))

        flooding = asyncio.create_task(flood())
        try:
            # Greater: the edges of other tests in this process count in the same registry.
            await wait_until(lambda: metric_value("edge_realtime_sessions_shed_total", reason="slow_client") > shed, 30)
            assert edge.app.state.services.realtime_slots.active == 0, "a shed session gives its slot back at once"
            code, reason, _ = await closed_with(ws)
        finally:
            flooding.cancel()
            await asyncio.gather(flooding, return_exceptions=True)
    assert code == 1008 and "too slow" in reason


async def test_a_shed_client_that_never_reads_is_disconnected(make_edge) -> None:
    """A shed session's slot is free at once, but its connection stays open while what was sent to
    it sits unread (uvicorn closes a transport only once its buffer is delivered): before the fix,
    for as long as the client liked. The client here reads nothing, ever."""
    edge = make_edge(realtime_send_queue_mb=2)
    shed = metric_value("edge_realtime_sessions_shed_total", reason="slow_client")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", edge.settings.port))
    client = sock.getsockname()

    def connected() -> bool:
        connections = list(edge.server.server_state.connections)  # one step: the edge's thread changes the set
        return any(tuple(getattr(c, "client", None) or ()) == client for c in connections)

    async with connect(f"{ws_url(edge)}{GA_URL}", sock=sock, max_queue=1, compression=None) as ws:

        async def flood() -> None:
            for _ in range(60):
                await ws.send(update(transcription={"prompt": "p" * 400_000}))

        flooding = asyncio.create_task(flood())
        try:
            await wait_until(lambda: metric_value("edge_realtime_sessions_shed_total", reason="slow_client") > shed, 30)
            assert connected()
            await wait_until(lambda: not connected(), 60)
        finally:
            flooding.cancel()
            await asyncio.gather(flooding, return_exceptions=True)


async def test_language_is_validated_like_http(edge: EdgeServer) -> None:
    async with connect(f"{ws_url(edge)}{GA_URL}") as ws:
        await receive(ws)
        await ws.send(update(transcription={"language": "zz"}))
        error = await receive(ws)
        assert error["type"] == "error"
        assert error["error"]["code"] == "unsupported_language"
        assert error["error"]["param"] == "session.audio.input.transcription.language"
        await ws.send(update(transcription={"language": "FR"}))
        updated = await receive(ws)
    assert updated["session"]["audio"]["input"]["transcription"]["language"] == "fr"


async def test_manual_commit_buffer_is_capped(make_edge) -> None:
    """At most 0.05 MB (about 1 s of 24 kHz PCM16) per commit: one error, the rest is dropped."""
    edge = make_edge(realtime_max_commit_mb=0.05)
    async with connect(f"{ws_url(edge)}{GA_URL}") as ws:
        await receive(ws)
        await ws.send(update(turn_detection=None))
        assert (await receive(ws))["type"] == "session.updated"
        for _ in range(20):
            await ws.send(append(SILENCE_100MS))
        error = await receive(ws)
        assert error["type"] == "error" and error["error"]["code"] == "input_audio_buffer_full"
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        # No second error for the appends after the first overflow: the commit's events come next.
        assert (await receive(ws))["type"] == "input_audio_buffer.committed"


async def test_closed_session_frees_its_slot_at_once(make_edge) -> None:
    """Its queued audio would take 40 s to go through this slow VAD; it is dropped instead."""
    edge = make_edge()
    slow_vad(edge, 1.0)
    async with connect(f"{ws_url(edge)}{GA_URL}") as ws:
        await receive(ws)
        for _ in range(40):
            await ws.send(append(SILENCE_100MS))
    await wait_until(lambda: edge.app.state.services.realtime_slots.active == 0, timeout=10)


async def test_lagging_session_is_shed_explicitly(make_edge, caplog: pytest.LogCaptureFixture) -> None:
    """Each 0.1 s of audio takes this VAD 0.3 s, so a client at real time falls behind; with
    keepalive pings every 0.5 s, unanswered ones would close the session (1011) within 3.5 s."""
    edge = make_edge(realtime_max_lag_s=3)
    edge.server.config.ws_ping_interval = 0.5
    edge.server.config.ws_ping_timeout = 3.0
    slow_vad(edge, 0.3)
    shed = metric_value("edge_realtime_sessions_shed_total", reason="lagging")
    with caplog.at_level(logging.WARNING, logger="edge.realtime"):
        async with connect(f"{ws_url(edge)}{GA_URL}") as ws:

            async def talk() -> None:
                for _ in range(300):
                    await ws.send(append(SILENCE_100MS))
                    await asyncio.sleep(0.1)

            talker = asyncio.create_task(talk())
            try:
                code, _, events = await closed_with(ws)
            finally:
                talker.cancel()
                await asyncio.gather(talker, return_exceptions=True)
    assert code == 1013
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "session_lagging"
    assert metric_value("edge_realtime_sessions_shed_total", reason="lagging") == shed + 1
    assert any("session_lagging" in r.getMessage() for r in caplog.records if r.name == "edge.realtime")
    await wait_until(lambda: edge.app.state.services.realtime_slots.active == 0, timeout=5)
