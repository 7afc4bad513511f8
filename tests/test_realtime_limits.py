"""Session limits and hygiene: the session cap, message size, slow clients, idle and length limits,
and disconnects that must leave no task and no vLLM request behind."""

import asyncio
import json

import pytest
from realtime_helpers import (
    JFK_1,
    build_recording,
    chunks,
    collect,
    count,
    edge_task_names,
    pcm16,
    send_paced,
    wait_until,
    ws_url,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import EdgeServer, vllm_requests_finished, vllm_requests_running

GA_URL = "/v1/realtime?intent=transcription"


async def closed_with(ws) -> tuple[int, str, list[dict]]:
    """Read until the server closes; return the close code, reason and the events before it."""
    events = []
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(30):
            while True:
                events.append(json.loads(await ws.recv()))
    return closed.value.rcvd.code, closed.value.rcvd.reason, events


def append(audio: str) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio})


async def test_session_cap_refuses_with_1013(make_edge) -> None:
    edge = make_edge(realtime_max_sessions=1)
    async with connect(f"{ws_url(edge)}{GA_URL}") as first:
        assert json.loads(await first.recv())["type"] == "session.created"
        async with connect(f"{ws_url(edge)}/ws") as second:
            code, reason, _ = await closed_with(second)
        assert code == 1013 and "Too many realtime sessions" in reason
    await wait_until(lambda: edge.app.state.services.realtime_slots.active == 0)
    async with connect(f"{ws_url(edge)}{GA_URL}") as third:
        assert json.loads(await third.recv())["type"] == "session.created"


@pytest.fixture(scope="module")
def strict_edge(make_edge) -> EdgeServer:
    return make_edge(
        realtime_max_message_mb=0.01, realtime_idle_timeout_s=1.5, realtime_max_session_s=4, realtime_send_queue=3
    )


async def test_oversize_message_closes_with_1009(strict_edge: EdgeServer) -> None:
    async with connect(f"{ws_url(strict_edge)}{GA_URL}") as ws:
        await ws.recv()
        await ws.send(append(next(chunks(bytes(20000), 20000))))
        code, _, events = await closed_with(ws)
    assert code == 1009
    assert events[-1]["error"]["code"] == "message_too_large"


async def test_idle_session_is_closed(strict_edge: EdgeServer) -> None:
    async with connect(f"{ws_url(strict_edge)}{GA_URL}") as ws:
        code, _, events = await closed_with(ws)
    assert code == 1000
    assert events[-1]["error"]["code"] == "idle_timeout"


async def test_session_ends_at_its_maximum_length(strict_edge: EdgeServer) -> None:
    async with connect(f"{ws_url(strict_edge)}{GA_URL}") as ws:
        silence = next(chunks(bytes(4800), 4800))

        async def keep_talking() -> None:
            while True:
                await ws.send(append(silence))
                await asyncio.sleep(0.5)

        talker = asyncio.create_task(keep_talking())
        try:
            code, _, events = await closed_with(ws)
        finally:
            talker.cancel()
    assert code == 1000
    assert events[-1]["error"]["code"] == "session_expired"


async def test_events_beyond_the_send_queue_close_the_connection(strict_edge: EdgeServer) -> None:
    """A turn's end is four events at once (stopped, committed, item added and done): more than the
    queue of three holds, as if the client had stopped reading."""
    recording = build_recording([JFK_1])
    async with connect(f"{ws_url(strict_edge)}{GA_URL}") as ws:
        await send_paced(lambda audio: ws.send(append(audio)), pcm16(recording.audio, 24000), 48000, chunk_s=0.05)
        code, reason, events = await closed_with(ws)
    assert code == 1008 and "too slow" in reason
    assert "input_audio_buffer.committed" not in [e["type"] for e in events]


async def test_disconnect_mid_turn_cancels_everything(make_edge, vllm_url: str) -> None:
    """The turn's transcription (3000 tokens, seconds of work) is under way when the client leaves."""
    edge = make_edge(max_output_tokens=3000)
    recording = build_recording([JFK_1])
    finished = vllm_requests_finished(vllm_url)
    async with connect(f"{ws_url(edge)}{GA_URL}") as ws:
        await ws.recv()
        await send_paced(lambda audio: ws.send(append(audio)), pcm16(recording.audio, 24000), 48000)
        await collect(ws.recv, count("input_audio_buffer.committed", 1))
    await wait_until(lambda: not [n for n in edge_task_names(edge) if n.startswith("realtime")], timeout=5)
    assert edge.app.state.services.realtime_slots.active == 0
    # Unless aborted, the transcription would finish (and count as finished) within this many seconds.
    await asyncio.sleep(8)
    assert vllm_requests_running(vllm_url) == 0
    assert vllm_requests_finished(vllm_url) == finished
