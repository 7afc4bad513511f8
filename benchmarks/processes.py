"""The processes a benchmark runs against: the tiny vLLM, the stand-in backend and the edge.

Each runs as a child process of its own, so its CPU time and memory can be read from /proc
(through psutil) apart from the load generator's. Ports are free loopback ports.
"""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from server.process.devmodel import SERVED_NAME, serve_tiny_model
from server.process.devmodel import TINY_VLLM_ARGS as DEVMODEL_VLLM_ARGS

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(__file__).resolve().parent / ".work"
SERVED_MODEL = SERVED_NAME
MAX_NUM_SEQS = 32
# As in the test suite; `--max-num-seqs` bounds vLLM's batch on two cores.
TINY_VLLM_ARGS = f"{DEVMODEL_VLLM_ARGS} --max-num-seqs {MAX_NUM_SEQS}"
MAX_OUTPUT_TOKENS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url} exited with code {process.returncode} before it was healthy")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} was not healthy within {timeout_s:.0f} s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextmanager
def tiny_vllm(scheduling_policy: str = "priority") -> Iterator[str]:
    """The tiny random-weight Voxtral on vLLM's CPU build; yields its base URL."""
    with serve_tiny_model(
        WORK / "tiny-voxtral",
        port=free_port(),
        max_num_seqs=MAX_NUM_SEQS,
        startup_timeout_s=900,
        scheduling_policy=scheduling_policy,
    ) as url:
        yield url


class Child:
    """A started child process and the URL it serves."""

    def __init__(self, process: subprocess.Popen, url: str) -> None:
        self.process = process
        self.url = url

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def standin(model: str = SERVED_MODEL) -> Iterator[Child]:
    """The zero-cost stand-in backend (`benchmarks.standin`) in a process of its own."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.standin", "--port", str(port), "--model", model], cwd=ROOT
    )
    child = Child(process, f"http://127.0.0.1:{port}")
    try:
        wait_healthy(child.url, process, 30)
        yield child
    finally:
        _stop(process)


@contextmanager
def edge(backend_url: str, **settings: object) -> Iterator[Child]:
    """The edge as `python -m uvicorn server.api.app:create_app --factory`, configured by environment;
    with several `workers` (`WORKERS`), through the launcher (`python -m server.process.launcher`), whose
    children are the workers (a `ProcessMeter` on it counts them all)."""
    workers = int(str(settings.get("workers", 1)))
    port = free_port()
    env = {
        **os.environ,
        "VLLM_URL": backend_url,
        "SERVED_MODEL_NAME": SERVED_MODEL,
        "MAX_OUTPUT_TOKENS": str(MAX_OUTPUT_TOKENS),
        "REALTIME_MAX_SESSIONS": "5000",
        "LOG_LEVEL": "warning",
    }
    env.update({key.upper(): str(value) for key, value in settings.items()})
    if workers > 1:
        env.update(HOST="127.0.0.1", PORT=str(port))
    command = (
        [sys.executable, "-m", "server.process.launcher"]
        if workers > 1
        else [
            sys.executable,
            "-m",
            "uvicorn",
            "server.api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    )
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    child = Child(process, f"http://127.0.0.1:{port}")
    try:
        wait_healthy(child.url, process, 60)
        yield child
    finally:
        _stop(process)


def child_listening_on(port: int) -> int | None:
    """The pid of our descendant started with `--port PORT` (the vLLM server), if any."""
    import psutil

    for process in psutil.Process().children(recursive=True):
        try:
            command = process.cmdline()
        except psutil.Error:
            continue
        if "--port" in command and command[command.index("--port") + 1 : command.index("--port") + 2] == [str(port)]:
            return process.pid
    return None
