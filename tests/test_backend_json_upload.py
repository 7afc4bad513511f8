"""Audio sent to the backend as JSON, as a RunPod endpoint's JSON-only proxy needs.

The backend here is a second edge in front of the real vLLM: it accepts the same JSON body
(`url` holding a `data:` URL) as this project's RunPod worker does.
"""

import logging

import openai
import pytest

from server.core.settings import Settings
from tests.conftest import DATA, SERVED_MODEL, EdgeServer


@pytest.fixture(scope="module")
def front(make_edge, edge: EdgeServer) -> EdgeServer:
    return make_edge(vllm_url=edge.url, backend_audio_upload="json", served_model_name=SERVED_MODEL)


def test_transcription_through_a_json_backend(front: EdgeServer, caplog: pytest.LogCaptureFixture) -> None:
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0)
    with caplog.at_level(logging.INFO, logger="edge.audio"), open(DATA / "jfk.flac", "rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    assert result.text and result.segments
    # One request line from the front edge, and one per chunk from the backend edge, which
    # received each chunk as a JSON body and decoded it from its data: URL.
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.audio"]
    assert sum("format=verbose_json" in line for line in lines) == 1
    assert sum("format=json" in line for line in lines) == len(result.segments)


def test_stream_through_a_json_backend(front: EdgeServer) -> None:
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0)
    with open(DATA / "jfk.flac", "rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    done = events[-1]
    assert done.type == "transcript.text.done"
    assert done.text == "".join(e.delta for e in events[:-1]).strip()
    assert done.usage.output_tokens == 6 and done.usage.input_tokens > 0


@pytest.mark.parametrize(
    ("url", "mode", "json_upload"),
    [
        ("https://api.runpod.ai/v2/abc123/openai/v1", "auto", True),
        ("http://127.0.0.1:8001", "auto", False),
        (None, "auto", False),
        ("http://127.0.0.1:8001", "json", True),
        ("https://api.runpod.ai/v2/abc123/openai/v1", "multipart", False),
    ],
)
def test_upload_mode_follows_the_backend(url: str | None, mode: str, json_upload: bool) -> None:
    assert Settings(_env_file=None, vllm_url=url, backend_audio_upload=mode).json_audio_upload is json_upload
