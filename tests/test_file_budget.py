"""The global budget of file requests at vLLM (`MAX_FILE_BACKEND_REQUESTS`), against the real vLLM:
never exceeded, shared in turns between files, and never in the way of realtime turns."""

import asyncio
import logging
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack

import httpx
import numpy as np
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

from server.core.audio import SAMPLE_RATE, decode_audio, encode_wav
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
    text = httpx.get(f"{edge.url}/metrics", timeout=60).text
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
    # The live budget is set to the same: the count of open realtime sessions is per process, and in
    # this test process another test's edge may still hold one (its own test is below).
    edge = make_edge(
        vllm_url=proxy.url,
        max_file_backend_requests=2,
        max_file_backend_requests_live=2,
        max_chunk_concurrency=8,
        **LONG,
    )

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


def settled_waiting(edge: EdgeServer, above: float) -> float:
    """The budget's waiting chunks once more than `above` wait and the count has stopped growing."""
    while True:
        wait_for(lambda: edge_gauge(edge, "edge_file_backend_requests_waiting") > above)
        before = edge_gauge(edge, "edge_file_backend_requests_waiting")
        time.sleep(0.5)
        if (now := edge_gauge(edge, "edge_file_backend_requests_waiting")) == before:
            return now


def finished_order(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The audio lengths of the edge's finished requests, in the order the edge finished them."""
    return [
        match.group(1)
        for record in caplog.records
        if record.name == "edge.audio" and (match := re.search(r"audio=([\d.]+)s", record.getMessage()))
    ]


def test_files_take_turns(make_edge, caplog: pytest.LogCaptureFixture) -> None:
    """Two long files and then a short clip queue behind a full budget, in that order. When places
    come free they take turns: the second file's first transcript and the clip come before the
    first file is done, and the first file, ahead in every round, ends before the second. The
    budget is held until all three wait, so the order does not depend on how fast vLLM is; it is
    read from the edge's own request log (a client's threads may read their answers late)."""
    caplog.set_level(logging.INFO, logger="edge.audio")
    edge = make_edge(max_file_backend_requests=1, max_chunk_concurrency=64, **LONG)
    audio = decode_audio(DATA / "silero_test.wav", max_duration_s=120)
    longer_wav = encode_wav(np.concatenate([audio, audio[: 5 * SAMPLE_RATE]]))  # tells the two apart in the log
    log: list[tuple[str, str]] = []
    held, pool = HeldBudget(edge), ThreadPoolExecutor(1)
    try:
        first = Stream(edge, "first", long_wav(), log)
        queued = settled_waiting(edge, above=0)
        second = Stream(edge, "second", longer_wav, log)
        queued = settled_waiting(edge, above=queued)
        files = {"file": ("a.wav", short_wav(), "audio/wav")}
        short = pool.submit(httpx.post, f"{edge.url}/v1/audio/transcriptions", files=files, timeout=300)
        settled_waiting(edge, above=queued)
    finally:
        held.release()
        pool.shutdown(wait=False)
    assert short.result(300).status_code == 200
    first.join(300)
    second.join(300)
    assert first.error is None and second.error is None
    assert log.index(("second", "delta")) < log.index(("first", "done"))
    assert finished_order(caplog) == ["1.50", "60.00", "65.00"]


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


async def test_a_client_that_goes_away_leaves_the_queue_and_frees_its_places(make_edge) -> None:
    """A streamed request waiting behind a full budget (its first transcript not yet there, so no
    answer started) whose client leaves: its chunks leave the queue at once, not when a place
    comes free."""
    edge = make_edge(max_file_backend_requests=1, max_chunk_concurrency=64, **LONG)
    held = HeldBudget(edge)
    try:
        async with httpx.AsyncClient(timeout=300) as http:
            files = {"file": ("a.wav", long_wav(), "audio/wav")}
            url = f"{edge.url}/v1/audio/transcriptions"
            leaving = asyncio.create_task(http.post(url, data={"stream": "true"}, files=files))
            await asyncio.to_thread(wait_for, lambda: edge_gauge(edge, "edge_file_backend_requests_waiting") >= 10)
            leaving.cancel()  # the connection closes
            await asyncio.gather(leaving, return_exceptions=True)
        await asyncio.to_thread(wait_for, lambda: edge_gauge(edge, "edge_file_backend_requests_waiting") == 0)
    finally:
        held.release()
    assert await asyncio.to_thread(edge_gauge, edge, "edge_file_backend_requests_in_flight") == 0
    files = {"file": ("a.wav", short_wav(), "audio/wav")}
    async with httpx.AsyncClient(timeout=300) as http:
        short = await http.post(f"{edge.url}/v1/audio/transcriptions", files=files)
    assert short.status_code == 200, short.text


async def test_an_open_live_session_shrinks_the_file_budget_and_its_end_restores_it(
    make_edge, proxy: RecordingProxy
) -> None:
    """A long file transcribed while a realtime session is open has at most
    `MAX_FILE_BACKEND_REQUESTS_LIVE` requests at vLLM; the same file once the session has closed
    has the whole budget."""
    edge = make_edge(
        vllm_url=proxy.url,
        max_file_backend_requests=4,
        max_file_backend_requests_live=1,
        max_chunk_concurrency=8,
        **LONG,
    )
    files = {"file": ("a.wav", long_wav(), "audio/wav")}
    url = f"{edge.url}/v1/audio/transcriptions"
    async with httpx.AsyncClient(timeout=300) as http:
        async with openai_client(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.recv()  # session.created: the session is admitted and counted
            beside_live = await http.post(url, files=files)
        assert beside_live.status_code == 200, beside_live.text
        assert len(proxy.paths("/v1/audio/transcriptions")) > 16
        assert proxy.peak == 1
        await asyncio.to_thread(wait_for, lambda: edge_gauge(edge, "edge_realtime_sessions") == 0)
        proxy.peak = 0
        alone = await http.post(url, files=files)
    assert alone.status_code == 200, alone.text
    assert proxy.peak > 1
