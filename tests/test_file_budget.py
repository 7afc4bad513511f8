"""The global budget of file requests at vLLM (`MAX_FILE_BACKEND_REQUESTS`), against the real vLLM:
never exceeded, shared in turns between files, and never in the way of realtime turns."""

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack

import httpx
import pytest
from backend_proxy import RecordingProxy
from realtime_helpers import (
    JFK_1,
    TRANSCRIPTION,
    VAD,
    build_recording,
    collect,
    count,
    openai_client,
    pcm16,
    send_paced,
)

from server.audio import SAMPLE_RATE, decode_audio, encode_wav
from tests.conftest import DATA, EdgeServer

# Short chunks make a one-minute recording some thirty vLLM requests.
LONG = dict(max_chunk_s=2.0)


def long_wav() -> bytes:
    return (DATA / "silero_test.wav").read_bytes()


def short_wav() -> bytes:
    """1.5 s of speech: one chunk, sent whole."""
    audio = decode_audio(DATA / "jfk.flac", max_duration_s=60)
    return encode_wav(audio[: int(1.5 * SAMPLE_RATE)])


def edge_gauge(edge: EdgeServer, name: str) -> float:
    text = httpx.get(f"{edge.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


class Stream(threading.Thread):
    """A streamed transcription read in the background; its events go to the shared `log`."""

    def __init__(self, edge: EdgeServer, name: str, wav: bytes, log: list[tuple[str, str]]) -> None:
        super().__init__(daemon=True)
        self.edge, self.name, self.wav, self.log = edge, name, wav, log
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            with httpx.stream(
                "POST",
                f"{self.edge.url}/v1/audio/transcriptions",
                data={"stream": "true"},
                files={"file": ("a.wav", self.wav, "audio/wav")},
                timeout=300,
            ) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if '"transcript.text.delta"' in line:
                        self.log.append((self.name, "delta"))
                    elif '"transcript.text.done"' in line:
                        self.log.append((self.name, "done"))
        except BaseException as exc:
            self.error = exc


@pytest.fixture
def proxy(vllm_url: str) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(vllm_url)
    yield proxy
    proxy.close()


def test_file_requests_at_vllm_never_exceed_the_budget(make_edge, proxy: RecordingProxy) -> None:
    # Two files with 8 chunks each in flight would be 16 requests at vLLM without the budget.
    edge = make_edge(vllm_url=proxy.url, max_file_backend_requests=2, max_chunk_concurrency=8, **LONG)

    def transcribe() -> None:
        files = {"file": ("a.wav", long_wav(), "audio/wav")}
        r = httpx.post(f"{edge.url}/v1/audio/transcriptions", files=files, timeout=300)
        assert r.status_code == 200, r.text

    threads = [threading.Thread(target=transcribe) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(proxy.paths("/v1/audio/transcriptions")) > 2 * 16
    assert proxy.peak == 2
    assert edge_gauge(edge, "edge_file_backend_requests_in_flight") == 0
    assert edge_gauge(edge, "edge_file_backend_requests_waiting") == 0


def test_files_take_turns(make_edge) -> None:
    """A long file's chunks all queued first: a second file and a short clip submitted after it
    still get places before it is done."""
    edge = make_edge(max_file_backend_requests=1, max_chunk_concurrency=64, **LONG)
    log: list[tuple[str, str]] = []
    first = Stream(edge, "first", long_wav(), log)
    wait_for(lambda: edge_gauge(edge, "edge_file_backend_requests_waiting") >= 10)
    second = Stream(edge, "second", long_wav(), log)
    wait_for(lambda: edge_gauge(edge, "edge_file_backend_requests_waiting") >= 20)
    files = {"file": ("a.wav", short_wav(), "audio/wav")}
    short = httpx.post(f"{edge.url}/v1/audio/transcriptions", files=files, timeout=300)
    assert short.status_code == 200, short.text
    log.append(("short", "done"))
    first.join(300)
    second.join(300)
    assert first.error is None and second.error is None
    assert log.index(("short", "done")) < log.index(("first", "done"))
    assert log.index(("second", "delta")) < log.index(("first", "done"))
    assert log.index(("first", "done")) < log.index(("second", "done"))


class HeldBudget:
    """Every place of the edge's file budget, taken on the edge's own loop until `release()`."""

    def __init__(self, edge: EdgeServer) -> None:
        self.loop = edge.server.servers[0].get_loop()
        budget = edge.app.state.services.transcriber.file_budget
        self.held = threading.Event()
        self._release: asyncio.Event | None = None

        async def hold() -> None:
            self._release = asyncio.Event()
            async with AsyncExitStack() as stack:
                job = budget.job()
                for _ in range(budget.capacity):
                    await stack.enter_async_context(job.slot())
                self.held.set()
                await self._release.wait()

        self.future = asyncio.run_coroutine_threadsafe(hold(), self.loop)
        assert self.held.wait(10)

    def release(self) -> None:
        assert self._release is not None
        self.loop.call_soon_threadsafe(self._release.set)
        self.future.result(10)


async def test_realtime_turns_pass_a_full_file_budget(make_edge) -> None:
    edge = make_edge(max_file_backend_requests=1)
    held = HeldBudget(edge)
    try:
        files = {"file": ("a.wav", short_wav(), "audio/wav")}
        async with httpx.AsyncClient(timeout=300) as http:
            waiting_file = asyncio.create_task(http.post(f"{edge.url}/v1/audio/transcriptions", files=files))
            while edge_gauge(edge, "edge_file_backend_requests_waiting") < 1:
                await asyncio.sleep(0.05)
            async with openai_client(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
                await conn.recv()
                await conn.session.update(
                    session={"type": "transcription", "audio": {"input": {"turn_detection": VAD}}}
                )
                await conn.recv()
                audio = pcm16(build_recording([JFK_1]).audio)
                await send_paced(lambda piece: conn.input_audio_buffer.append(audio=piece), audio, 32000)
                events = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 1))
            assert events[-1]["transcript"] is not None
            assert not waiting_file.done()  # the file is still waiting for a place
            held.release()
            response = await waiting_file
        assert response.status_code == 200, response.text
    finally:
        if not held.future.done():
            held.release()


def test_a_client_that_goes_away_leaves_the_queue_and_frees_its_places(make_edge) -> None:
    edge = make_edge(max_file_backend_requests=1, max_chunk_concurrency=64, **LONG)
    with httpx.Client(timeout=300) as http:
        files = {"file": ("a.wav", long_wav(), "audio/wav")}
        with http.stream("POST", f"{edge.url}/v1/audio/transcriptions", data={"stream": "true"}, files=files) as r:
            assert r.status_code == 200
            wait_for(lambda: edge_gauge(edge, "edge_file_backend_requests_waiting") >= 10)
    wait_for(lambda: edge_gauge(edge, "edge_file_backend_requests_waiting") == 0)
    wait_for(lambda: edge_gauge(edge, "edge_file_backend_requests_in_flight") == 0)
    short = httpx.post(
        f"{edge.url}/v1/audio/transcriptions", files={"file": ("a.wav", short_wav(), "audio/wav")}, timeout=300
    )
    assert short.status_code == 200, short.text
