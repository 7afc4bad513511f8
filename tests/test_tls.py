"""TLS without a proxy: the edge serves https and wss itself (`TLS_CERTFILE`, `TLS_KEYFILE`), with a
self-signed certificate made here, and the OpenAI Node SDK's realtime client (which always uses
wss) transcribes over it with an API key.

The Node test runs npm's `openai` and `ws` from .venvs/node (installed by `./serve.sh test`); without
them it fails rather than skipping.
"""

import json
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
import websockets
from node_helpers import node_packages
from realtime_helpers import JFK_1, build_recording, pcm16
from tls_helpers import self_signed

from tests.conftest import EdgeServer

KEY = "sk-tls-0123456789abcdefghijklmn"
NODE_SCRIPT = Path(__file__).parent / "node" / "realtime_wss.mjs"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_edge(make_edge: Callable[..., EdgeServer], certificate: tuple[Path, Path]) -> str:
    """Base URL (https) of an edge serving TLS itself, with an API key."""
    cert_file, key_file = certificate
    edge = make_edge(api_keys=KEY, tls_certfile=str(cert_file), tls_keyfile=str(key_file))
    return edge.url.replace("http://", "https://")


def test_https_with_a_key(tls_edge: str, certificate: tuple[Path, Path]) -> None:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    assert httpx.get(f"{tls_edge}/health", verify=context).status_code == 200
    assert httpx.get(f"{tls_edge}/v1/models", verify=context).status_code == 401
    listed = httpx.get(f"{tls_edge}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, verify=context)
    assert listed.status_code == 200
    with pytest.raises(httpx.RemoteProtocolError):  # plain http on the TLS port is not served
        httpx.get(tls_edge.replace("https://", "http://") + "/health", timeout=5)
    with pytest.raises(httpx.ConnectError):  # and the certificate is really checked
        httpx.get(f"{tls_edge}/health")


async def test_wss_with_the_python_sdk(tls_edge: str, certificate: tuple[Path, Path]) -> None:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    wss = tls_edge.replace("https://", "wss://")
    client = openai.AsyncOpenAI(api_key=KEY, base_url=f"{tls_edge}/v1", websocket_base_url=f"{wss}/v1")
    async with client.realtime.connect(
        extra_query={"intent": "transcription"}, websocket_connection_options={"ssl": context}
    ) as conn:
        assert (await conn.recv()).type == "session.created"
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"{wss}/v1/realtime", ssl=context):
            pass


def run_node(folder: Path, base_url: str, key: str, pcm_file: Path, ca_file: Path) -> dict:
    done = subprocess.run(
        ["node", str(folder / NODE_SCRIPT.name), base_url, key, str(pcm_file)],
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", "NODE_EXTRA_CA_CERTS": str(ca_file)},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_node_sdk_realtime_over_wss_with_a_key(tls_edge: str, certificate: tuple[Path, Path], tmp_path: Path) -> None:
    folder = node_packages(NODE_SCRIPT)
    pcm_file = tmp_path / "jfk.pcm"
    pcm_file.write_bytes(pcm16(build_recording([JFK_1]).audio, 24000))
    result = run_node(folder, f"{tls_edge}/v1", KEY, pcm_file, certificate[0])
    assert result["url"].startswith("wss://127.0.0.1:")
    assert result.get("error") is None, result
    assert result["created"] is True
    assert len(result["transcripts"]) == 1 and isinstance(result["transcripts"][0], str)

    refused = run_node(folder, f"{tls_edge}/v1", "sk-wrong-key-000000000000000", pcm_file, certificate[0])
    assert refused["created"] is False
    assert refused["error"] == "handshake refused: HTTP 403"
