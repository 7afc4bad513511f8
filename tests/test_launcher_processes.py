"""`./serve.sh`'s launcher leaves no process behind: when vLLM's main process dies, the launcher
exits and takes vLLM's EngineCore (and any other process vLLM started) with it, and removes the
socket files vLLM's processes talked over.

Runs the real launcher (`python -m server.process.launcher`) with a real vLLM serving the tiny model.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from server.process.devmodel import SERVED_NAME, TINY_VLLM_ARGS, write_model
from tests.conftest import ROOT, free_port


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of process group `pgid`."""
    found = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


@pytest.mark.timeout(900)  # vLLM starts from scratch here
def test_no_vllm_process_outlives_the_launcher(tmp_path: Path) -> None:
    vllm_python = os.environ.get("VLLM_PYTHON")
    if not vllm_python:
        pytest.fail("VLLM_PYTHON must name the Python of vLLM's environment (./serve.sh test sets it)")
    port = free_port()
    env = dict(
        os.environ,
        VLLM_PYTHON=vllm_python,
        VOXTRAL_MODEL=str(write_model(tmp_path / "tiny")),
        SERVED_MODEL_NAME=SERVED_NAME,
        VLLM_LOAD_FORMAT="dummy",
        VLLM_PORT=str(free_port()),
        VLLM_ARGS=f"{TINY_VLLM_ARGS} --max-num-seqs 2",
        VLLM_CPU_KVCACHE_GB="1",
        HOST="127.0.0.1",
        PORT=str(port),
    )
    env.pop("VLLM_URL", None)
    log = tmp_path / "launcher.log"
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "server.process.launcher"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 600
        while True:
            assert launcher.poll() is None, f"the launcher exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the edge did not start:\n{log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        (vllm,) = psutil.Process(launcher.pid).children()
        members = group_members(vllm.pid)
        assert len(members) >= 2, "vLLM runs its engine in a process of its own"
        ipc_dir = Path(vllm.environ()["VLLM_RPC_BASE_PATH"])
        assert any(ipc_dir.iterdir()), "vLLM's ZMQ sockets are in the launcher's directory"
        vllm.send_signal(signal.SIGKILL)
        assert launcher.wait(60) == 1, log.read_text()
        assert "vLLM exited with code -9" in log.read_text()
        _, alive = psutil.wait_procs([m for m in members if m.pid != vllm.pid], timeout=10)
        assert not alive, f"vLLM's processes outlived the launcher: {[p.cmdline() for p in alive]}"
        assert not group_members(vllm.pid)
        assert not ipc_dir.exists(), "the launcher removes vLLM's socket files"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
