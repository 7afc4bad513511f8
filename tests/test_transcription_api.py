"""The transcription API end to end: the `openai` SDK and plain HTTP → edge → real vLLM (tiny model)."""

import base64
import re
import time

import httpx
import openai
import pytest

from tests.conftest import (
    DATA,
    OPENAI_SEGMENT_FIELDS,
    SERVED_MODEL,
    EdgeServer,
    vllm_requests_finished,
    vllm_requests_running,
)

SRT_CUE = re.compile(r"^\d+\n\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}\n", re.M)
VTT_CUE = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} --> \d{2}:\d{2}:\d{2}\.\d{3}\n", re.M)


@pytest.fixture
def client(edge: EdgeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{edge.url}/v1", api_key="unused", max_retries=0)


def test_json(client: openai.OpenAI) -> None:
    with open(DATA / "jfk.flac", "rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert isinstance(result.text, str) and result.text.strip()
    assert result.text == result.text.strip()


def test_model_may_be_the_served_name_or_omitted(edge: EdgeServer) -> None:
    for fields in ({"model": SERVED_MODEL}, {}):
        with open(DATA / "silero_test.mp3", "rb") as f:
            r = httpx.post(f"{edge.url}/v1/audio/transcriptions", data=fields, files={"file": f}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["usage"] == {"type": "duration", "seconds": 3}


def test_text(client: openai.OpenAI) -> None:
    with open(DATA / "jfk.flac", "rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(result, str) and result.strip()


def test_verbose_json(client: openai.OpenAI) -> None:
    with open(DATA / "jfk.flac", "rb") as f:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["segment"],
            language="en",
        )
    assert result.duration == pytest.approx(11.0, abs=0.05)
    assert result.language == "en"
    assert result.segments, "speech was found, so there is at least one segment"
    first = result.segments[0]
    # JFK starts speaking about 0.3 s in and stops about 10.6 s in.
    assert 0.0 <= first.start < 1.0
    assert 9.5 < result.segments[-1].end <= 11.0
    for seg in result.segments:
        for key in OPENAI_SEGMENT_FIELDS:
            assert getattr(seg, key) is not None
    assert result.text == " ".join(s.text for s in result.segments if s.text)


def test_srt_and_vtt(client: openai.OpenAI) -> None:
    with open(DATA / "silero_test.wav", "rb") as f:
        srt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")
    with open(DATA / "silero_test.wav", "rb") as f:
        vtt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="vtt")
    assert len(SRT_CUE.findall(srt)) >= 2
    assert vtt.startswith("WEBVTT\n\n")
    assert len(VTT_CUE.findall(vtt)) == len(SRT_CUE.findall(srt))


def test_stream(client: openai.OpenAI) -> None:
    with open(DATA / "jfk.flac", "rb") as f:
        events = list(client.audio.transcriptions.create(model="gpt-4o-transcribe", file=f, stream=True))
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done"
    assert types.count("transcript.text.delta") >= 2
    done = events[-1]
    assert done.text == "".join(e.delta for e in events[:-1]).strip()
    assert done.usage.input_tokens > 0
    assert done.usage.output_tokens == 6
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens


def test_translation(client: openai.OpenAI) -> None:
    with open(DATA / "silero_test.opus", "rb") as f:
        result = client.audio.translations.create(model="whisper-1", file=f)
    assert result.text.strip()
    with open(DATA / "silero_test.opus", "rb") as f:
        verbose = client.audio.translations.create(model="whisper-1", file=f, response_format="verbose_json")
    assert verbose.segments
    assert verbose.model_extra["task"] == "translate"


def test_url_multipart_and_json(edge: EdgeServer, media_url: str) -> None:
    url = f"{media_url}/jfk.flac"
    r = httpx.post(f"{edge.url}/v1/audio/transcriptions", files={"url": (None, url)}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["seconds"] == 11
    r = httpx.post(
        f"{edge.url}/v1/audio/transcriptions", json={"url": url, "response_format": "verbose_json"}, timeout=60
    )
    assert r.status_code == 200, r.text
    assert r.json()["duration"] == pytest.approx(11.0, abs=0.05)


def test_data_url(edge: EdgeServer) -> None:
    data = base64.b64encode((DATA / "silero_test.mp3").read_bytes()).decode()
    r = httpx.post(f"{edge.url}/v1/audio/transcriptions", json={"url": f"data:audio/mpeg;base64,{data}"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["text"]


def test_long_recording_is_split_and_stitched(
    client: openai.OpenAI, edge: EdgeServer, vllm_url: str, media_dir
) -> None:
    before = vllm_requests_finished(vllm_url)
    with open(media_dir / "long.wav", "rb") as f:
        result = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json")
    sent = vllm_requests_finished(vllm_url) - before
    assert result.duration == pytest.approx(184.0, abs=0.1)
    assert len(result.segments) >= 7  # 184 s of speech in chunks of at most 30 s
    assert sent == len(result.segments)
    previous_end = 0.0
    for seg in result.segments:
        assert previous_end <= seg.start < seg.end <= result.duration
        assert seg.end - seg.start <= edge.settings.max_chunk_s + 1e-6
        previous_end = seg.end


def test_long_recording_streams_in_order(client: openai.OpenAI, media_dir) -> None:
    with open(media_dir / "long.wav", "rb") as f:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=f, stream=True))
    assert events[-1].type == "transcript.text.done"
    assert events[-1].text == "".join(e.delta for e in events[:-1]).strip()
    assert events[-1].usage.output_tokens >= 7 * 6


def test_server_vad_chunking_strategy(edge: EdgeServer) -> None:
    with open(DATA / "silero_test.wav", "rb") as f:
        r = httpx.post(
            f"{edge.url}/v1/audio/transcriptions",
            data={
                "response_format": "verbose_json",
                "chunking_strategy[type]": "server_vad",
                "chunking_strategy[silence_duration_ms]": "300",
            },
            files={"file": f},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    fine = r.json()["segments"]
    with open(DATA / "silero_test.wav", "rb") as f:
        coarse = httpx.post(
            f"{edge.url}/v1/audio/transcriptions",
            data={"response_format": "verbose_json"},
            files={"file": f},
            timeout=60,
        ).json()["segments"]
    # Every speech region is its own segment with server_vad; "auto" packs them into 30 s chunks.
    assert len(fine) > len(coarse) >= 2


def test_stream_disconnect_aborts_backend_requests(make_edge, vllm_url: str, media_dir) -> None:
    # Long outputs keep vLLM busy for many seconds, unless the edge aborts them on disconnect.
    edge = make_edge(max_output_tokens=30000)
    finished_before = vllm_requests_finished(vllm_url)
    with httpx.Client(timeout=60) as http, open(media_dir / "long.wav", "rb") as f:
        with http.stream(
            "POST", f"{edge.url}/v1/audio/transcriptions", data={"stream": "true"}, files={"file": f}
        ) as r:
            assert r.status_code == 200
            lines = r.iter_lines()  # kept referenced: closing it would disconnect early
            assert next(lines).startswith("data:")
            assert vllm_requests_running(vllm_url) > 0
    deadline = time.monotonic() + 60
    while vllm_requests_running(vllm_url) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert vllm_requests_running(vllm_url) == 0
    # Each chunk would need 30000 tokens (many seconds) to finish; aborted requests do not count as finished.
    assert vllm_requests_finished(vllm_url) == finished_before


def test_disconnect_during_a_long_transcription_aborts_backend_requests(make_edge, vllm_url: str, media_dir) -> None:
    edge = make_edge(max_output_tokens=30000)
    finished_before = vllm_requests_finished(vllm_url)
    with open(media_dir / "long.wav", "rb") as f, pytest.raises(httpx.ReadTimeout):
        # The client gives up after 3 s and hangs up; the chunks would need far longer.
        httpx.post(f"{edge.url}/v1/audio/transcriptions", files={"file": f}, timeout=httpx.Timeout(60, read=3))
    deadline = time.monotonic() + 60
    while vllm_requests_running(vllm_url) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert vllm_requests_running(vllm_url) == 0
    assert vllm_requests_finished(vllm_url) == finished_before
