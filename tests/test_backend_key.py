"""A vLLM that refuses the key this server sends it (`VLLM_API_KEY`) is a configuration error,
said at once: the RunPod worker exits naming it, the edge's /ready and its requests answer a 503
`backend_auth_failed` (not vLLM's 401, which a client would take for its own key), logged once.

One real vLLM of this module's own requires a key (the session's has none): `TEST_KEYED_VLLM_URL`
names one already serving, started with
`python -m server.process.devmodel DIR --serve PORT --api-key right-key`.
"""

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.processes import free_port
from server.backend.vllm_client import BackendAuthFailed, VLLMClient
from server.process.devmodel import serve_tiny_model
from server.runpod.backend import VLLMBackend
from tests.conftest import DATA, ROOT, EdgeServer, edge_settings

RIGHT_KEY = "right-key"
STARTUP_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def keyed_vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real vLLM serving the tiny model that requires `RIGHT_KEY`."""
    if url := os.environ.get("TEST_KEYED_VLLM_URL"):
        yield url
        return
    directory = tmp_path_factory.mktemp("tiny-voxtral-keyed")
    with serve_tiny_model(directory, port=free_port(), max_num_seqs=4, api_key=RIGHT_KEY) as url:
        yield url


@pytest.fixture(scope="module")
def edges(keyed_vllm_url: str) -> Iterator[dict[str, EdgeServer]]:
    """Edges in front of the keyed vLLM: with the wrong key, without one, and with the right one."""
    keys = {"wrong": "wrong-key", "missing": None, "right": RIGHT_KEY}
    started = {name: EdgeServer(edge_settings(keyed_vllm_url, vllm_api_key=key)).start() for name, key in keys.items()}
    yield started
    for edge in started.values():
        edge.stop()


def assert_auth_failed(response: httpx.Response, vllm_url: str, fragment: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "backend_auth_failed"
    assert error["type"] == "service_unavailable"
    assert fragment in error["message"] and "VLLM_API_KEY" in error["message"]
    assert f"{vllm_url}/v1" in error["message"]
    assert "Retry-After" not in response.headers  # waiting does not mend a configuration


def test_the_runpod_backend_refused_its_key_says_so_at_once(keyed_vllm_url: str) -> None:
    for key, fragment in (("wrong-key", "was refused"), (None, "is not set")):
        backend = VLLMBackend(edge_settings(keyed_vllm_url, vllm_api_key=key, vllm_startup_timeout_s=STARTUP_TIMEOUT_S))
        began = time.monotonic()
        with pytest.raises(BackendAuthFailed) as refused:
            backend.start()
        assert time.monotonic() - began < 15
        assert refused.value.backend_status == 401
        message = str(refused.value)
        assert fragment in message and f"the vLLM at {keyed_vllm_url}/v1" in message and "(401)" in message
    VLLMBackend(edge_settings(keyed_vllm_url, vllm_api_key=RIGHT_KEY, vllm_startup_timeout_s=60)).start()


def test_the_runpod_worker_exits_with_the_message(keyed_vllm_url: str, tmp_path: Path) -> None:
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith(("VLLM_", "RUNPOD_"))},
        "PYTHONPATH": str(ROOT),
        "VLLM_URL": keyed_vllm_url,
        "VLLM_API_KEY": "wrong-key",
        "VLLM_STARTUP_TIMEOUT_S": str(STARTUP_TIMEOUT_S),
    }
    began = time.monotonic()
    worker = subprocess.run(
        [sys.executable, "-m", "server.runpod.worker"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - began < 120
    assert worker.returncode == 1, worker.stdout + worker.stderr
    assert f"VLLM_API_KEY was refused by the vLLM at {keyed_vllm_url}/v1 (401)" in worker.stderr


def test_ready_names_the_refused_key_and_logs_it_once(
    edges: dict[str, EdgeServer], keyed_vllm_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.backend")
    for _ in range(3):
        ready = httpx.get(f"{edges['wrong'].url}/ready", timeout=30)
        assert_auth_failed(ready, keyed_vllm_url, "was refused")
        assert ready.json()["status"] == "unavailable"
    logged = [r for r in caplog.records if r.name == "edge.backend" and "VLLM_API_KEY" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    assert_auth_failed(httpx.get(f"{edges['missing'].url}/ready", timeout=30), keyed_vllm_url, "is not set")


def test_requests_through_an_edge_whose_key_is_refused_get_the_configuration_error(
    edges: dict[str, EdgeServer], keyed_vllm_url: str
) -> None:
    url = edges["wrong"].url
    with open(DATA / "silero_test.wav", "rb") as f:
        transcription = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": f}, timeout=60)
    assert_auth_failed(transcription, keyed_vllm_url, "was refused")
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    chat = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert_auth_failed(chat, keyed_vllm_url, "was refused")
    assert_auth_failed(httpx.get(f"{url}/v1/models", timeout=30), keyed_vllm_url, "was refused")


def test_the_right_key_works(edges: dict[str, EdgeServer]) -> None:
    url = edges["right"].url
    assert httpx.get(f"{url}/ready", timeout=30).json()["status"] == "ready"
    with open(DATA / "silero_test.wav", "rb") as f:
        transcription = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": f}, timeout=60)
    assert transcription.status_code == 200, transcription.text
    assert isinstance(transcription.json()["text"], str)


async def test_the_client_logs_a_refusal_again_only_when_it_changes_or_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The log-once bookkeeping of `VLLMClient`, with a backend whose answer the test switches."""
    answer = {"status": 401}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answer["status"], json={"object": "list", "data": [{"id": "m"}]})

    client = VLLMClient(edge_settings("http://vllm.invalid", vllm_api_key="k"))
    await client.aclose()
    client._http = httpx.AsyncClient(base_url=client.base_url, transport=httpx.MockTransport(handler))
    caplog.set_level(logging.INFO, logger="edge.backend")

    async def poll(times: int) -> None:
        for _ in range(times):
            try:
                await client.models()
            except BackendAuthFailed:
                pass

    await poll(3)
    answer["status"] = 403
    await poll(3)
    answer["status"] = 200
    await poll(3)
    answer["status"] = 401
    await poll(2)
    await client.aclose()
    messages = [
        r.getMessage().removesuffix(": a configuration error of this server.")
        for r in caplog.records
        if r.name == "edge.backend"
    ]
    assert messages == [
        "VLLM_API_KEY was refused by the vLLM at http://vllm.invalid/v1 (401)",
        "VLLM_API_KEY is not allowed by the vLLM at http://vllm.invalid/v1 (403)",
        "the vLLM at http://vllm.invalid/v1 accepts VLLM_API_KEY again",
        "VLLM_API_KEY was refused by the vLLM at http://vllm.invalid/v1 (401)",
    ]
