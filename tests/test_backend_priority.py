"""vLLM request priorities: live conversation replies ahead, chat passthrough behind, and never a
failed request over them (vLLM's own source: lower values are scheduled first, and only its chat,
completion and responses endpoints take a `priority`, its transcription endpoints none)."""

import asyncio
import time
from collections.abc import Iterator
from contextlib import aclosing, suppress

import httpx
import pytest
from backend_proxy import RecordingProxy
from realtime_helpers import JFK_1, build_recording, collect, count, openai_client, pcm16, send_paced
from test_realtime_extensions import session

from server.backend.vllm_client import BULK_PRIORITY, KEEPALIVE_S, LIVE_PRIORITY, VLLMClient
from server.core.settings import Settings
from server.process.devmodel import serve_tiny_model
from server.process.launcher import vllm_command
from tests.conftest import SERVED_MODEL, free_port, metric_sum
from tests.failure_backends import PriorityRefusingBackend

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def proxy(vllm_url: str) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(vllm_url)
    yield proxy
    proxy.close()


def chat_body(**extra: object) -> dict:
    return {"model": SERVED_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **extra}


def test_the_launcher_starts_vllm_scheduling_by_priority() -> None:
    command = vllm_command(Settings(_env_file=None))
    assert command[command.index("--scheduling-policy") + 1] == "priority"
    own = vllm_command(Settings(_env_file=None, vllm_args="--scheduling-policy=fcfs"))
    assert "--scheduling-policy" not in own and "--scheduling-policy=fcfs" in own
    assert LIVE_PRIORITY < 0 < BULK_PRIORITY  # vLLM's transcriptions run at 0, between the two


def test_chat_passthrough_is_sent_behind_live_work(make_edge, proxy: RecordingProxy) -> None:
    edge = make_edge(vllm_url=proxy.url)
    for extra, sent in [
        ({}, BULK_PRIORITY),
        ({"priority": BULK_PRIORITY + 5}, BULK_PRIORITY + 5),
        ({"priority": -50}, BULK_PRIORITY),
    ]:
        plain = httpx.post(f"{edge.url}{CHAT}", json=chat_body(**extra), timeout=60)
        assert plain.status_code == 200, plain.text
        assert proxy.paths(CHAT)[-1]["priority"] == sent
    with httpx.stream("POST", f"{edge.url}{CHAT}", json=chat_body(stream=True), timeout=60) as streamed:
        assert streamed.status_code == 200
        assert "[DONE]" in streamed.read().decode()
    assert proxy.paths(CHAT)[-1]["priority"] == BULK_PRIORITY
    assert edge.app.state.services.backend.accepts_priority


async def test_conversation_replies_are_sent_as_live_work(make_edge, proxy: RecordingProxy) -> None:
    edge = make_edge(vllm_url=proxy.url)
    async with openai_client(edge).realtime.connect(model=SERVED_MODEL) as conn:
        await conn.recv()
        await conn.session.update(session={**session(), "type": "realtime", "max_output_tokens": 3})
        await conn.recv()
        audio = pcm16(build_recording([JFK_1]).audio)
        await send_paced(lambda piece: conn.input_audio_buffer.append(audio=piece), audio, 32000)
        events = await collect(conn.recv_bytes, count("response.done", 1))
    assert events[-1]["response"]["status"] == "incomplete"  # its 3 tokens were used up
    assert proxy.paths(CHAT)[-1]["priority"] == LIVE_PRIORITY
    # Transcriptions go without one: vLLM's transcription endpoints take none.
    transcriptions = [raw for path, raw in proxy.raw if path == "/v1/audio/transcriptions"]
    assert transcriptions and not any(b'name="priority"' in raw for raw in transcriptions)


def test_a_backend_refusing_priorities_still_serves_every_request(make_edge) -> None:
    backend = PriorityRefusingBackend()
    try:
        edge = make_edge(vllm_url=backend.url)
        for body in (chat_body(), chat_body(stream=True), chat_body(priority=20)):
            r = httpx.post(f"{edge.url}{CHAT}", json=body, timeout=30)
            assert r.status_code == 200, r.text
        # Refused once, sent again without; none sent after that, not even the client's own.
        assert [body.get("priority") for body in backend.bodies] == [BULK_PRIORITY, None, None, None]
        assert not edge.app.state.services.backend.accepts_priority
    finally:
        backend.close()


@pytest.fixture(scope="module", params=["priority", "fcfs"])
def one_seq_vllm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private vLLM that runs one request at a time, so the others queue: scheduling by priority
    (as the launcher starts it) or first come, first served (vLLM's default)."""
    directory = tmp_path_factory.mktemp("one-seq")
    with serve_tiny_model(directory, port=free_port(), max_num_seqs=1, scheduling_policy=request.param) as url:
        yield url


class Gauges:
    """vLLM's `/metrics`, read with a long timeout: on two cores, while vLLM streams hundreds of
    tokens a second, other processes on the box stall for seconds at a time (measured: new
    connections to vLLM taking 8–13 s, a probe's own loop stalling up to 25 s), so a 5 s connect
    timeout fails there."""

    def __init__(self, vllm_url: str) -> None:
        # Like the edge's client, idle connections are dropped before vLLM's keep-alive closes them.
        self._http = httpx.AsyncClient(base_url=vllm_url, timeout=60, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S))

    async def value(self, name: str) -> float:
        """The metric now; a poll that fails in transport is sent again (a fresh-clone run saw vLLM
        drop a kept-alive connection as the poll went out, the process having stalled between)."""
        for _ in range(2):
            with suppress(httpx.TransportError):
                return metric_sum((await self._http.get("/metrics")).text, name)
        return metric_sum((await self._http.get("/metrics")).text, name)

    async def state(self) -> str:
        names = ("num_requests_running", "num_requests_waiting", "request_success_total")
        return ", ".join([f"{name} {await self.value(f'vllm:{name}')}" for name in names])

    async def until(self, metric: str, at_least: int, deadline: float, running: asyncio.Task) -> None:
        while await self.value(metric) < at_least:
            assert not running.done(), f"the long request ended first ({running}): {await self.state()}"
            assert time.monotonic() < deadline, f"{metric} never reached {at_least}: {await self.state()}"
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        await self._http.aclose()


@pytest.mark.timeout(300)
async def test_vllm_runs_live_requests_ahead_of_queued_bulk_ones(
    one_seq_vllm: str, request: pytest.FixtureRequest
) -> None:
    """Through the edge's own client: with a long streamed request running, a bulk and then a live
    request queue; then the running one is aborted. Scheduling by priority, vLLM (lower value
    first) starts the live one first; without the policy vLLM 0.32 ignores priorities and every
    request still succeeds, in arrival order. The running request is held open (read, not timed)
    until both others are seen waiting, so a slow machine cannot let it finish first; connections
    to vLLM may take long to open while it is busy (see `Gauges`)."""
    policy = request.node.callspec.params["one_seq_vllm"]
    # A long connect timeout: see `Gauges` (the product's 5 s default is for a vLLM on its own GPU).
    client = VLLMClient(Settings(_env_file=None, vllm_url=one_seq_vllm, backend_connect_timeout_s=60))
    gauges = Gauges(one_seq_vllm)
    finished: list[str] = []
    deadline = time.monotonic() + 240
    streaming = asyncio.Event()

    async def chat(name: str, priority: int) -> None:
        await client.chat(chat_body(max_tokens=5, ignore_eos=True), priority=priority)
        finished.append(name)

    async def hold() -> None:
        body = chat_body(max_tokens=32000, ignore_eos=True, stream=True)
        async with aclosing(client.chat_stream(body)) as chunks:
            async for _ in chunks:  # read all along: vLLM's writes never wait for this client
                streaming.set()

    try:
        await gauges.state()
        running = asyncio.create_task(hold())
        async with asyncio.timeout(120):
            await streaming.wait()  # vLLM streams its tokens: the request runs
        bulk = asyncio.create_task(chat("bulk", BULK_PRIORITY))
        await gauges.until("vllm:num_requests_waiting", 1, deadline, running)
        live = asyncio.create_task(chat("live", LIVE_PRIORITY))
        await gauges.until("vllm:num_requests_waiting", 2, deadline, running)
        assert not bulk.done() and not live.done()
        running.cancel()  # closes the stream: vLLM aborts the running request and picks the next
        await asyncio.gather(running, return_exceptions=True)
        await asyncio.gather(bulk, live)
        assert finished == (["live", "bulk"] if policy == "priority" else ["bulk", "live"])
        assert client.accepts_priority
    finally:
        await client.aclose()
        await gauges.aclose()
