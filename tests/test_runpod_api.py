"""The worker as RunPod runs it: `python -m server.runpod.worker` in its own process, with the
RunPod SDK's local job API (`--rp_serve_api`); and the worker exiting when vLLM's engine dies."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, SERVED_MODEL, free_port


def worker_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "VLLM_", "MODEL_NAME"))}
    env.update(LOG_LEVEL="info", **values)
    return env


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "server.runpod.worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.stdout.read() if process.stdout else ""


def start_local_api(vllm_url: str) -> tuple[subprocess.Popen[str], str]:
    """A worker serving the local job API, using the session's vLLM through VLLM_URL; and its URL."""
    port = free_port()
    env = worker_env(
        VLLM_URL=vllm_url,
        SERVED_MODEL_NAME=SERVED_MODEL,
        MAX_OUTPUT_TOKENS="6",
        ALLOWED_URL_HOSTS="127.0.0.1",
    )
    process = start_worker(env, "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the worker's local API did not start:\n{stop(process)}")
        try:
            httpx.get(f"{url}/docs", timeout=2)
            return process, url
        except httpx.TransportError:
            time.sleep(0.5)


@pytest.fixture(scope="module")
def local_api(vllm_url: str) -> Iterator[str]:
    """The worker's local job API."""
    process, url = start_local_api(vllm_url)
    yield url
    stop(process)


def test_runsync_transcription(local_api: str, media_url: str) -> None:
    job = {"input": {"audio": f"{media_url}/jfk.flac", "response_format": "verbose_json"}}
    result = httpx.post(f"{local_api}/runsync", json=job, timeout=300).json()
    assert result["status"] == "COMPLETED"
    [body] = result["output"]
    assert body["duration"] == pytest.approx(11.0, abs=0.1) and body["segments"]


def test_runsync_streaming_job_returns_the_aggregated_events(local_api: str, media_url: str) -> None:
    openai_input = {"url": f"{media_url}/jfk.flac", "stream": True}
    job = {"input": {"openai_route": "/v1/audio/transcriptions", "openai_input": openai_input}}
    result = httpx.post(f"{local_api}/runsync", json=job, timeout=300).json()
    assert result["status"] == "COMPLETED"
    events = result["output"]
    assert all(event.startswith("data: {") for event in events)
    assert '"transcript.text.done"' in events[-1]


def test_runsync_bad_input_reports_the_error(local_api: str) -> None:
    result = httpx.post(f"{local_api}/runsync", json={"input": {"audio": "%%%"}}, timeout=60).json()
    [output] = result["output"]
    assert output == {"error": "`audio` is neither a URL (http, https or data:) nor valid base64-encoded audio."}


def test_the_edge_app_starts_once_for_the_jobs_and_stops_at_shutdown(vllm_url: str) -> None:
    process, url = start_local_api(vllm_url)
    try:
        for _ in range(2):
            result = httpx.post(f"{url}/runsync", json={"input": {"openai_route": "/v1/models"}}, timeout=60).json()
            assert result["status"] == "COMPLETED" and result["output"][0]["object"] == "list"
    finally:
        output = stop(process)
    assert output.count("edge ready;") == 1
    assert "the edge app stopped" in output.split("edge ready;")[1]


class _DyingVLLM(BaseHTTPRequestHandler):
    """A stand-in vLLM whose engine dies after a few health checks (`/health` then answers 503)."""

    healthy_checks = 2

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._answer(200, b'{"object": "list", "data": [{"id": "stub", "object": "model"}]}')
        elif self.path == "/health":
            type(self).healthy_checks -= 1
            self._answer(200 if type(self).healthy_checks >= 0 else 503, b"")
        else:
            self._answer(404, b"")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_worker_exits_when_the_external_engine_dies() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DyingVLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = worker_env(VLLM_URL=f"http://127.0.0.1:{server.server_address[1]}")
        process = start_worker(env, "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(free_port()))
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker kept running with a dead engine:\n{stop(process)}")
        output = stop(process)
        assert process.returncode == 1
        assert "engine is dead" in output and "RunPod replaces this worker" in output
    finally:
        server.shutdown()


STUB_VLLM = textwrap.dedent(
    """
    import sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
        def log_message(self, *args):
            pass

    port = int(sys.argv[sys.argv.index("--port") + 1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("stub vLLM serving", " ".join(sys.argv[1:]), flush=True)
    time.sleep(4)
    print("stub vLLM engine crashed", flush=True)
    sys.exit(3)
    """
)


def test_worker_starts_vllm_with_the_launcher_and_exits_when_it_dies(tmp_path: Path) -> None:
    script = tmp_path / "stub_vllm.py"
    script.write_text(STUB_VLLM)
    fake_python = tmp_path / "python"
    fake_python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    fake_python.chmod(0o755)
    env = worker_env(
        VLLM_PYTHON=str(fake_python),
        VLLM_PORT=str(free_port()),
        MODEL_NAME="org/some-voxtral",
        MAX_MODEL_LEN="2048",
    )
    process = start_worker(env, "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", str(free_port()))
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker kept running after vLLM exited:\n{stop(process)}")
    output = stop(process)
    assert process.returncode == 1
    # RunPod's variables reached the launcher's command line.
    assert "--model org/some-voxtral" in output and "--max-model-len 2048" in output
    assert "vLLM exited with code 3" in output and "stub vLLM engine crashed" in output
