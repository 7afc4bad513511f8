"""The launcher (`./serve.sh`'s `python -m server.process.launcher`) with a local vLLM: vLLM gets a random
API key per start that only the edge knows, so vLLM refuses requests without it; with
`TLS_CERTFILE`/`TLS_KEYFILE` the edge serves https and the launcher prints https URLs.

Starts its own vLLM (tiny model) through the launcher, as a user would.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tls_helpers import self_signed

from server.process.devmodel import SERVED_NAME, TINY_VLLM_ARGS, write_model
from tests.conftest import ROOT, free_port


def test_launcher_vllm_refuses_requests_without_the_edges_key(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    edge_port, vllm_port = free_port(), free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(edge_port),
        "VLLM_PORT": str(vllm_port),
        "VOXTRAL_MODEL": str(write_model(tmp_path / "tiny")),
        "SERVED_MODEL_NAME": SERVED_NAME,
        "VLLM_LOAD_FORMAT": "dummy",
        "VLLM_ARGS": f"{TINY_VLLM_ARGS} --max-num-seqs 2",
        "VLLM_CPU_KVCACHE_GB": "1",
        "MAX_OUTPUT_TOKENS": "4",
        "TLS_CERTFILE": str(cert_file),
        "TLS_KEYFILE": str(key_file),
    }
    for name in ("VLLM_URL", "VLLM_API_KEY", "API_KEYS", "API_KEYS_FILE"):
        env.pop(name, None)
    log_file = tmp_path / "launcher.log"
    with open(log_file, "wb") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "server.process.launcher"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    edge = f"https://127.0.0.1:{edge_port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert launcher.poll() is None, log_file.read_text()[-3000:]
            assert time.monotonic() < deadline, "the launcher did not get ready"
            try:
                if httpx.get(f"{edge}/ready", verify=str(cert_file), timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        # vLLM itself: its /health is open, its API refuses a request without the key.
        assert httpx.get(f"http://127.0.0.1:{vllm_port}/health").status_code == 200
        refused = httpx.get(f"http://127.0.0.1:{vllm_port}/v1/models")
        assert refused.status_code == 401
        wrong = httpx.get(f"http://127.0.0.1:{vllm_port}/v1/models", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
        # The edge has the key (and is open itself here: no API_KEYS), over https.
        listed = httpx.get(f"{edge}/v1/models", verify=str(cert_file))
        assert listed.status_code == 200
        assert SERVED_NAME in [m["id"] for m in listed.json()["data"]]
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(60)
    output = log_file.read_text()
    assert f"API   https://127.0.0.1:{edge_port}/v1" in output
    assert f"UI    https://127.0.0.1:{edge_port}/" in output
    assert "--api-key" not in output
