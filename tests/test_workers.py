"""`WORKERS=2` through the real launcher (`python -m server.process.launcher`) in front of the test vLLM:
both workers serve HTTP (the real `openai` SDK) and realtime sessions, `/metrics` merges them,
`REALTIME_MAX_SESSIONS` holds across them, and SIGTERM stops every process.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from openai import OpenAI
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from realtime_helpers import JFK_1, TRANSCRIPTION, build_recording, collect, count, pcm16, send_paced
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import DATA, ROOT, SERVED_MODEL, free_port

GA_URL = "/v1/realtime?intent=transcription"
MODELS_ROUTE = "/v1/models"


@dataclass
class Launched:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def workers(self) -> list[psutil.Process]:
        """The edge's worker processes (uvicorn's, spawned by multiprocessing)."""
        children = psutil.Process(self.process.pid).children()
        return [p for p in children if "spawn_main" in " ".join(p.cmdline())]


@pytest.fixture(scope="module")
def launched(vllm_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    port = free_port()
    env = dict(
        os.environ,
        VLLM_URL=vllm_url,
        WORKERS="2",
        HOST="127.0.0.1",
        PORT=str(port),
        SERVED_MODEL_NAME=SERVED_MODEL,
        MAX_OUTPUT_TOKENS="6",
        REALTIME_MAX_SESSIONS="1",
        LOG_LEVEL="warning",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = tmp_path_factory.mktemp("workers") / "launcher.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.process.launcher"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    edge = Launched(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 120
        while len(edge.workers()) < 2 or not _all_ready(edge):
            assert process.poll() is None, f"the launcher exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the workers did not start:\n{log.read_text()}"
            time.sleep(0.5)
        yield edge
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _all_ready(edge: Launched) -> bool:
    try:
        return httpx.get(f"{edge.url}/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def requests_by_pid(edge: Launched) -> dict[int, float]:
    """`/v1/models` requests each worker counted, read from its own metrics file."""
    found = {}
    for worker in edge.workers():
        directory = Path(worker.environ()["PROMETHEUS_MULTIPROC_DIR"])
        files = [str(f) for f in directory.glob(f"counter_{worker.pid}.db")]
        found[worker.pid] = sum(
            sample.value
            for family in MultiProcessCollector.merge(files)
            for sample in family.samples
            if sample.name == "edge_requests_total" and sample.labels.get("route") == MODELS_ROUTE
        )
    return found


def merged_requests(edge: Launched) -> float:
    text = httpx.get(f"{edge.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "edge_requests_total" and sample.labels.get("route") == MODELS_ROUTE
    )


def test_both_workers_serve_and_metrics_are_merged(launched: Launched) -> None:
    sent = 0
    while sent < 400 and sum(n > 0 for n in requests_by_pid(launched).values()) < 2:
        for _ in range(10):  # a new connection each time: the kernel hands them to either worker
            assert httpx.get(f"{launched.url}{MODELS_ROUTE}", timeout=10).status_code == 200
            sent += 1
    by_pid = requests_by_pid(launched)
    assert len(by_pid) == 2 and all(n > 0 for n in by_pid.values()), by_pid
    assert sum(by_pid.values()) == sent
    assert merged_requests(launched) == sent


def test_http_transcription(launched: Launched) -> None:
    client = OpenAI(api_key="unused", base_url=f"{launched.url}/v1")
    with (DATA / "jfk.flac").open("rb") as audio:
        result = client.audio.transcriptions.create(model=SERVED_MODEL, file=audio)
    assert result.text


async def refused(url: str) -> bool:
    """Whether a new session is closed at once with 1013 (all slots taken) rather than created."""
    async with connect(url) as ws:
        try:
            async with asyncio.timeout(30):
                return json.loads(await ws.recv())["type"] != "session.created"
        except ConnectionClosed as closed:
            return closed.rcvd is not None and closed.rcvd.code == 1013


async def test_realtime_session_and_cap_across_workers(launched: Launched) -> None:
    """With a cap of one session, while one is open every new one is refused, whichever worker
    takes it (a per-worker cap would let the other worker accept); the slot comes back after."""
    url = f"{launched.url.replace('http://', 'ws://')}{GA_URL}"
    recording = build_recording([JFK_1])
    async with connect(url) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        attempts = [await refused(url) for _ in range(8)]
        assert all(attempts)
        append = lambda audio: ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))  # noqa: E731
        await send_paced(append, pcm16(recording.audio, 24000), 48000)
        events = await collect(ws.recv, count(f"{TRANSCRIPTION}.completed", 1), timeout=120)
    assert next(e for e in events if e["type"] == f"{TRANSCRIPTION}.completed")["transcript"]
    deadline = time.monotonic() + 15
    while await refused(url):  # the session's slot is given back once its worker has closed it
        assert time.monotonic() < deadline, "the slot was not given back"
        await asyncio.sleep(0.5)


def test_sigterm_stops_every_process(launched: Launched) -> None:
    children = psutil.Process(launched.process.pid).children(recursive=True)
    workers = launched.workers()
    directory = Path(workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"])
    assert len(workers) == 2 and directory.is_dir()
    launched.process.send_signal(signal.SIGTERM)
    assert launched.process.wait(60) == 0, launched.log.read_text()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"processes outlived the launcher: {[p.cmdline() for p in alive]}"
    assert not directory.exists(), "the launcher removes the workers' shared directory"
