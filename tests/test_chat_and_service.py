"""Chat with audio (passed through to the real vLLM), models, health, readiness and metrics."""

import base64

import httpx
import openai
import pytest

from tests.conftest import DATA, SERVED_MODEL, EdgeServer

AUDIO_B64 = base64.b64encode((DATA / "silero_test.mp3").read_bytes()).decode()


@pytest.fixture
def client(edge: EdgeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{edge.url}/v1", api_key="unused", max_retries=0)


def audio_message(part: dict) -> list[dict]:
    return [{"role": "user", "content": [part, {"type": "text", "text": "What is said?"}]}]


def test_chat_with_input_audio(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model="voxtral",
        messages=audio_message({"type": "input_audio", "input_audio": {"data": AUDIO_B64, "format": "mp3"}}),
        max_tokens=5,
    )
    assert result.model == SERVED_MODEL
    assert result.choices[0].message.content is not None
    assert result.usage.completion_tokens == 5


def test_chat_with_audio_url_fetched_by_the_edge(client: openai.OpenAI, media_url: str) -> None:
    with_audio = client.chat.completions.create(
        model="voxtral",
        messages=audio_message({"type": "audio_url", "audio_url": {"url": f"{media_url}/jfk.flac"}}),
        max_tokens=3,
    )
    text_only = client.chat.completions.create(
        model="voxtral", messages=[{"role": "user", "content": "What is said?"}], max_tokens=3
    )
    # 11 s of audio adds a few hundred audio tokens to the prompt.
    assert with_audio.usage.prompt_tokens > text_only.usage.prompt_tokens + 100


def test_chat_audio_url_to_private_address_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="voxtral",
            messages=audio_message({"type": "audio_url", "audio_url": {"url": "http://169.254.169.254/x.wav"}}),
            max_tokens=3,
        )
    assert (info.value.code, info.value.param) == ("url_not_allowed", "messages")


def test_chat_stream_is_relayed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="voxtral",
        messages=audio_message({"type": "input_audio", "input_audio": {"data": AUDIO_B64, "format": "mp3"}}),
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len(chunks) >= 4
    assert chunks[-1].usage.completion_tokens == 4


def test_models_lists_served_model_and_aliases(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {SERVED_MODEL, "whisper-1", "gpt-4o-transcribe"} <= ids
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_health_and_ready(edge: EdgeServer) -> None:
    assert httpx.get(f"{edge.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{edge.url}/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": SERVED_MODEL}


def test_ready_is_503_when_the_model_is_not_served(make_edge) -> None:
    wrong = make_edge(served_model_name="another-model")
    r = httpx.get(f"{wrong.url}/ready")
    assert r.status_code == 503 and "another-model" in r.json()["reason"]


def test_metrics_count_requests_audio_and_stages(edge: EdgeServer) -> None:
    with open(DATA / "jfk.flac", "rb") as f:
        assert httpx.post(f"{edge.url}/v1/audio/transcriptions", files={"file": f}, timeout=60).status_code == 200
    text = httpx.get(f"{edge.url}/metrics").text
    assert 'edge_requests_total{route="/v1/audio/transcriptions",status="200"}' in text
    audio = [
        line
        for line in text.splitlines()
        if line.startswith('edge_audio_seconds_total{route="/v1/audio/transcriptions"}')
    ]
    assert audio and float(audio[0].split()[-1]) >= 11.0
    for stage in ("decode", "vad", "backend", "total"):
        assert f'edge_stage_seconds_count{{stage="{stage}"}}' in text


def test_chat_with_bad_input_audio_is_400(client: openai.OpenAI) -> None:
    for data in ("not base64!!", base64.b64encode(b"not audio" * 50).decode()):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="voxtral",
                messages=audio_message({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}),
                max_tokens=3,
            )
