"""Word times from realtime deltas: the step-to-time arithmetic, a file through the real vLLM, and
the edge's word timestamps from the vLLM for live sessions."""

import asyncio
from collections.abc import Callable

import httpx
import openai
import pytest

from server.backend.vllm_realtime.probe import RealtimeBackend, RealtimeProbe
from server.backend.vllm_realtime.protocol import STEP_SAMPLES
from server.backend.vllm_realtime.stream import StreamDelta, heard_end
from server.backend.vllm_realtime.words import transcribe_with_words, words_from_deltas
from server.core.audio import decode_audio
from server.core.words import Word
from server.process.devmodel import REALTIME_SERVED_NAME
from tests.conftest import DATA, REALTIME_TEST_MAX_MODEL_LEN, EdgeServer, edge_settings
from tests.tcp_proxy import CountingProxy

STEP_S = STEP_SAMPLES / 16000


def deltas(texts: list[str], start: int = 0) -> list[StreamDelta]:
    return [StreamDelta("item", text, k, start, heard_end(start, k)) for k, text in enumerate(texts)]


def test_a_word_spans_the_steps_that_wrote_it_less_the_delay() -> None:
    # Step k's text stands for the audio of step k of the generation: [k, k + 1) × 80 ms.
    words = words_from_deltas(deltas(["", " And", " so", "", " my", " fel", "low", "."]), audio_end=10 * 16000)
    assert words == [
        Word("And", 1 * STEP_S, 2 * STEP_S),
        Word("so", 2 * STEP_S, 3 * STEP_S),
        Word("my", 4 * STEP_S, 5 * STEP_S),
        Word("fellow.", 5 * STEP_S, 8 * STEP_S),
    ]


def test_word_times_follow_the_generation_and_stay_in_the_audio() -> None:
    later = 100 * STEP_SAMPLES  # a generation restarted 8 s into the audio
    words = words_from_deltas(deltas([" one", " two"], start=later), audio_end=later + STEP_SAMPLES + 100)
    assert words[0] == Word("one", 100 * STEP_S, 101 * STEP_S)
    assert words[1].start == pytest.approx(101 * STEP_S)
    assert words[1].end == pytest.approx((later + STEP_SAMPLES + 100) / 16000)


def test_the_padding_steps_of_a_generation_stay_before_the_next_one() -> None:
    """A generation's last steps (vLLM's right padding) come after its audio: their text stands for
    the generation's end, not the next generation's audio."""
    cut = 3 * STEP_SAMPLES
    first = deltas([" a", "", "", " b", " c"])  # steps 3 and 4 are past its 3 steps of audio
    second = deltas([" d"], start=cut)
    words = words_from_deltas(first + second, audio_end=cut + 5 * STEP_SAMPLES)
    assert [w.word for w in words] == ["a", "b", "c", "d"]
    assert [(w.start, w.end) for w in words[1:3]] == [(3 * STEP_S, 3 * STEP_S)] * 2
    assert words[3] == Word("d", 3 * STEP_S, 4 * STEP_S)


async def test_a_file_through_the_realtime_vllm(realtime_vllm_url: str) -> None:
    audio = decode_audio(DATA / "jfk.flac", max_duration_s=600)
    backend = RealtimeBackend(realtime_vllm_url, REALTIME_SERVED_NAME, REALTIME_TEST_MAX_MODEL_LEN)
    text, words = await transcribe_with_words(backend, audio)
    assert text
    assert "".join(text.split()) == "".join(w.word for w in words)
    assert all(0 <= w.start <= w.end <= len(audio) / 16000 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)


def test_the_edge_transcribes_files_with_the_realtime_model(realtime_vllm_url: str) -> None:
    """One deployment: the realtime model also serves the edge's file transcription."""
    edge = EdgeServer(
        edge_settings(realtime_vllm_url, served_model_name=REALTIME_SERVED_NAME, max_output_tokens=None)
    ).start()
    try:
        client = openai.OpenAI(base_url=f"{edge.url}/v1", api_key="unused", max_retries=0)
        with open(DATA / "jfk.flac", "rb") as f:
            result = client.audio.transcriptions.create(model="whisper-1", file=f)
        assert result.text.strip()
    finally:
        edge.stop()


async def test_files_get_words_from_the_vllm_for_live_sessions(
    make_edge: Callable[..., EdgeServer], realtime_vllm_url: str
) -> None:
    """Files go to the main vLLM, their word timestamps to `REALTIME_VLLM_URL`'s, the one live
    sessions stream through; the edge asks that vLLM what it serves once for all of them."""
    proxy = CountingProxy(realtime_vllm_url)
    try:
        edge = make_edge(realtime_vllm_url=proxy.url)
        client = openai.AsyncOpenAI(
            base_url=f"{edge.url}/v1", api_key="unused", websocket_base_url=edge.url.replace("http", "ws") + "/v1"
        )
        jfk = ("jfk.flac", (DATA / "jfk.flac").read_bytes())
        for _ in range(2):
            result = await client.audio.transcriptions.create(
                model="whisper-1", file=jfk, response_format="verbose_json", timestamp_granularities=["word"]
            )
            assert result.text and result.words is not None
            assert [w.word for w in result.words] == result.text.split()
            assert all(0 <= w.start <= w.end <= result.duration for w in result.words)
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            assert (await conn.recv()).type == "session.created"
        assert proxy.count == 1
    finally:
        proxy.close()


def test_translations_get_no_words_from_the_realtime_vllm(
    make_edge: Callable[..., EdgeServer], realtime_vllm_url: str
) -> None:
    edge = make_edge(realtime_vllm_url=realtime_vllm_url)
    with open(DATA / "jfk.flac", "rb") as f:
        response = httpx.post(
            f"{edge.url}/v1/audio/translations",
            files={"file": f},
            data={"response_format": "verbose_json", "timestamp_granularities[]": "word"},
            timeout=120,
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("timestamp_granularities", "unsupported_value")


async def test_the_probe_asks_again_after_its_recheck_time(realtime_vllm_url: str) -> None:
    proxy = CountingProxy(realtime_vllm_url)
    try:
        probe = RealtimeProbe(proxy.url)
        found = await probe.backend()
        assert found is not None and await probe.backend() == found
        assert proxy.count == 1
        probe.RECHECK_S = 0.0
        await asyncio.sleep(0.01)
        assert await probe.backend() == found
        assert proxy.count == 2
    finally:
        proxy.close()
