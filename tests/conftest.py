"""Shared fixtures: one real vLLM (CPU build, tiny random-weight Voxtral) per test session, and
edge servers (real uvicorn on a loopback port) configured per test module.
"""

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from benchmarks.processes import free_port
from server.api.app import create_app
from server.core.settings import Settings
from server.process.devmodel import SERVED_NAME, serve_tiny_model
from server.process.launcher import uvicorn_config

pytest_plugins = ["tests.event_validation"]  # every OpenAI server event sent must validate against the SDK's types

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent
SERVED_MODEL = SERVED_NAME
# The fields of an OpenAI `verbose_json` segment.
OPENAI_SEGMENT_FIELDS = {
    "id",
    "seek",
    "start",
    "end",
    "text",
    "tokens",
    "temperature",
    "avg_logprob",
    "compression_ratio",
    "no_speech_prob",
}


@pytest.fixture(scope="session")
def vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real vLLM serving the tiny model with random weights, for the whole session.

    `TEST_VLLM_URL` names one already serving it (`python -m server.process.devmodel --serve PORT`), to
    iterate on a few tests without a start each time; the full suite always starts its own.
    """
    if url := os.environ.get("TEST_VLLM_URL"):
        yield url
        return
    with serve_tiny_model(tmp_path_factory.mktemp("tiny-voxtral"), port=free_port()) as url:
        yield url


# One realtime generation of the test server: 256 tokens, about 15 s of audio, so a session
# longer than one generation stays short.
REALTIME_TEST_MAX_MODEL_LEN = 256


@pytest.fixture(scope="session")
def realtime_vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second real vLLM, serving the tiny realtime model (`/v1/realtime`), started on first use.

    `TEST_REALTIME_VLLM_URL` names one already serving it
    (`python -m server.process.devmodel --realtime DIR --max-model-len 256 --serve PORT`).
    """
    if url := os.environ.get("TEST_REALTIME_VLLM_URL"):
        yield url
        return
    directory = tmp_path_factory.mktemp("tiny-voxtral-realtime")
    with serve_tiny_model(
        directory, port=free_port(), realtime=True, max_model_len=REALTIME_TEST_MAX_MODEL_LEN, max_num_seqs=4
    ) as url:
        yield url


class EdgeServer:
    """The edge app served by uvicorn in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn_config(self.app, settings, host="127.0.0.1", log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{settings.port}"

    def start(self) -> "EdgeServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the edge did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def edge_settings(backend_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        port=free_port(),
        vllm_url=backend_url,
        served_model_name=SERVED_MODEL,
        max_output_tokens=6,
        allowed_url_hosts="127.0.0.1,localhost",
        warmup_requests=0,  # tests/test_warmup.py warms; the rest need not wait for it
        webrtc_host_addresses="127.0.0.1",  # the suite's network namespace has nothing else
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def make_edge(vllm_url: str) -> Iterator[Callable[..., EdgeServer]]:
    """Start an edge with setting overrides; every edge started is stopped at session end."""
    started: list[EdgeServer] = []

    def make(**overrides: object) -> EdgeServer:
        edge = EdgeServer(edge_settings(vllm_url, **overrides)).start()
        started.append(edge)
        return edge

    yield make
    for edge in started:
        edge.stop()


@pytest.fixture(scope="session")
def edge(make_edge: Callable[..., EdgeServer]) -> EdgeServer:
    """The default edge, in front of the session's vLLM."""
    return make_edge()


@pytest.fixture
def http(edge: EdgeServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edge.url, timeout=120) as client:
        yield client


def assert_still_healthy(edge: EdgeServer, *, transcribes: bool = False) -> None:
    """The edge still answers `/health` (and, with `transcribes`, still transcribes a file)."""
    assert httpx.get(f"{edge.url}/health").json() == {"status": "ok"}
    if transcribes:
        with open(DATA / "silero_test.mp3", "rb") as f:
            response = httpx.post(f"{edge.url}/v1/audio/transcriptions", files={"file": f}, timeout=60)
        assert response.status_code == 200


def metric_sum(text: str, name: str, label: str = "") -> float:
    """A metric of a Prometheus text page, summed over the label sets that contain `label`."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{") and label in line
    )


def vllm_metric(vllm_url: str, name: str, label: str = "") -> float:
    """A metric of vLLM's own `/metrics`, summed over the label sets that contain `label`."""
    return metric_sum(httpx.get(f"{vllm_url}/metrics", timeout=10).text, name, label)


def vllm_requests_running(vllm_url: str) -> float:
    return vllm_metric(vllm_url, "vllm:num_requests_running")


def vllm_requests_finished(vllm_url: str) -> float:
    """Requests vLLM finished (stopped or hit their length); aborted ones are not counted."""
    return vllm_metric(vllm_url, "vllm:request_success_total")


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder served over loopback HTTP by `media_url`: the test recordings, and a long one."""
    import shutil

    import numpy as np

    from server.core.audio import SAMPLE_RATE, decode_audio, encode_wav

    folder = tmp_path_factory.mktemp("media")
    for item in DATA.iterdir():
        shutil.copy(item, folder / item.name)
    speech = decode_audio(DATA / "silero_test.wav", max_duration_s=600)
    pause = np.zeros(SAMPLE_RATE * 2, dtype=np.float32)
    long_audio = np.concatenate([speech, pause, speech, pause, speech])
    (folder / "long.wav").write_bytes(encode_wav(long_audio))
    return folder


@pytest.fixture(scope="session")
def media_url(media_dir: Path) -> Iterator[str]:
    """Base URL of a stdlib HTTP file server on 127.0.0.1 serving `media_dir`."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(media_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium (a Playwright `Browser`) whose fake microphone speaks
    `ui_helpers.fake_speech_wav`'s utterances; one per test module that asks for it."""
    from ui_helpers import chromium_with_fake_microphone, fake_speech_wav

    recording = tmp_path_factory.mktemp("microphone") / "utterances.wav"
    fake_speech_wav(recording)
    with chromium_with_fake_microphone(recording) as browser:
        yield browser
