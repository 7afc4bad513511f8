"""Live sessions on the streaming engine: the OpenAI SDK's realtime clients (GA and beta) against
an edge whose live sessions go to a real vLLM serving the tiny Voxtral Realtime model.

The random-weight model writes noise, so the tests check where text goes and how much audio vLLM
heard: it answers every 80 ms step with one delta, so an item's `usage.output_tokens` counts the
steps of its generations (`expected_steps`, see `test_stream_engine`).
"""

import asyncio
import json
from collections.abc import Callable, Iterator

import openai
import pytest
from openai import AsyncOpenAI
from realtime_helpers import (
    JFK_1,
    JFK_2,
    TOLERANCE_MS,
    TRANSCRIPTION,
    VAD,
    build_recording,
    collect,
    count,
    of_type,
    pcm16,
    send_paced,
)
from websockets.exceptions import ConnectionClosed

from server.backend.vllm_realtime.protocol import STEP_SAMPLES
from server.backend.vllm_realtime.stream import steps_per_generation
from server.core.settings import Settings
from server.process.devmodel import REALTIME_SERVED_NAME
from tests.conftest import (
    DATA,
    REALTIME_TEST_MAX_MODEL_LEN,
    SERVED_MODEL,
    EdgeServer,
    edge_settings,
    free_port,
)
from tests.test_realtime_tcp import stream as tcp_stream
from tests.test_stream_engine import AT_DONE_MS, CuttableProxy, expected_steps, speech, steps_to_write

RATE = 16000
GA_PCM16 = {"type": "audio/pcm", "rate": RATE}


@pytest.fixture(scope="module")
def stream_edge(make_edge: Callable[..., EdgeServer], realtime_vllm_url: str) -> EdgeServer:
    """Files go to the main vLLM, live sessions to the realtime one (`REALTIME_VLLM_URL`)."""
    return make_edge(realtime_vllm_url=realtime_vllm_url, realtime_engine="stream")


@pytest.fixture(scope="module")
def whole_stream_edge(make_edge: Callable[..., EdgeServer], realtime_vllm_url: str) -> EdgeServer:
    """Finals wait for vLLM's done, so that an item's usage counts every step vLLM computed for it."""
    return make_edge(
        realtime_vllm_url=realtime_vllm_url, realtime_engine="stream", realtime_stream_margin_ms=AT_DONE_MS
    )


def client_of(edge: EdgeServer) -> AsyncOpenAI:
    ws = edge.url.replace("http://", "ws://")
    return AsyncOpenAI(api_key="unused", base_url=f"{edge.url}/v1", websocket_base_url=f"{ws}/v1")


def ga_session(turn_detection: dict | None) -> dict:
    return {"type": "transcription", "audio": {"input": {"format": GA_PCM16, "turn_detection": turn_detection}}}


def item_events(events: list[dict], item_id: str) -> list[dict]:
    return [e for e in events if item_id in (e.get("item_id"), (e.get("item") or {}).get("id"))]


def assert_streamed_item(events: list[dict], item_id: str) -> dict:
    """The item's deltas add up to its completed text, none after it; returns the completed event."""
    mine = item_events(events, item_id)
    completed = [e for e in mine if e["type"] == f"{TRANSCRIPTION}.completed"]
    assert len(completed) == 1
    deltas = [e for e in mine if e["type"] == f"{TRANSCRIPTION}.delta"]
    assert deltas and "".join(e["delta"] for e in deltas) == completed[0]["transcript"]
    assert all(e["delta"] for e in deltas)  # vLLM's empty steps are not forwarded
    # Extension: where the audio each delta's text stands for ends, later and later.
    spoken_to = [e["audio_end_ms"] for e in deltas]
    assert spoken_to == sorted(spoken_to)
    assert mine[-1] is completed[0]
    assert completed[0]["content_index"] == 0
    assert_words(completed[0])
    return completed[0]


def assert_words(completed: dict) -> None:
    """The extension field `words`: the transcript's words in order, timed in seconds since the
    session's start (the mapping of steps to times is tested in `test_realtime_words`)."""
    words = completed["words"]
    assert [w["word"] for w in words] == completed["transcript"].split()
    assert all(0 <= word["start"] <= word["end"] for word in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)


async def test_ga_client_gets_deltas_while_speaking_with_server_vad(stream_edge: EdgeServer) -> None:
    recording = build_recording([JFK_1, JFK_2])
    first_start, first_end = recording.truth_ms[0]
    mid_speech = (first_start + first_end) // 2 * RATE // 1000
    async with client_of(stream_edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        # The session names the model its live text comes from, not the main vLLM's.
        assert created.session.model_dump()["audio"]["input"]["transcription"]["model"] == REALTIME_SERVED_NAME
        await conn.session.update(session=ga_session(VAD))
        assert (await conn.recv()).type == "session.updated"
        append = lambda audio: conn.input_audio_buffer.append(audio=audio)  # noqa: E731
        # Half the first utterance: its text streams before the speaker has stopped.
        await send_paced(append, pcm16(recording.audio[:mid_speech]), RATE * 2)
        early = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.delta", 1))
        assert not of_type(early, "input_audio_buffer.speech_stopped")
        await send_paced(append, pcm16(recording.audio[mid_speech:]), RATE * 2)
        events = early + await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 2))
        typed = conn.parse_event(json.dumps(of_type(events, f"{TRANSCRIPTION}.delta")[0]))
        assert typed.type == f"{TRANSCRIPTION}.delta"
    started = of_type(events, "input_audio_buffer.speech_started")
    assert len(started) == 2
    assert early[-1]["item_id"] == started[0]["item_id"]
    previous = None
    for speech_started in started:
        item_id = speech_started["item_id"]
        kinds = [e["type"] for e in item_events(events, item_id) if not e["type"].endswith(".delta")]
        assert kinds == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            f"{TRANSCRIPTION}.completed",
        ]
        assert of_type(item_events(events, item_id), "input_audio_buffer.committed")[0]["previous_item_id"] == previous
        previous = item_id
        completed = assert_streamed_item(events, item_id)
        assert completed["usage"]["output_tokens"] > 0
        # Words lie within the item: from its start to the end of the audio sent.
        starts = speech_started["audio_start_ms"] / 1000
        assert all(starts <= w["start"] <= w["end"] <= len(recording.audio) / RATE for w in completed["words"])
        deltas = [e for e in item_events(events, item_id) if e["type"] == f"{TRANSCRIPTION}.delta"]
        assert all(starts * 1000 < e["audio_end_ms"] for e in deltas)
    assert [e["item_id"] for e in of_type(events, f"{TRANSCRIPTION}.completed")] == [e["item_id"] for e in started]


async def test_beta_client_with_manual_commits_loses_no_audio(whole_stream_edge: EdgeServer) -> None:
    """Without turn detection the items follow each other at the commits: every sample is transcribed."""
    audio = speech(5)
    cut = 3 * RATE
    client = client_of(whole_stream_edge)
    async with client.beta.realtime.connect(model="gpt-4o-transcribe", extra_query={"intent": "transcription"}) as conn:
        assert json.loads(await conn.recv_bytes())["type"] == "transcription_session.created"
        await conn.send(
            {
                "type": "transcription_session.update",
                "session": {"input_audio_format": "pcm16", "turn_detection": None},
            }
        )
        assert json.loads(await conn.recv_bytes())["type"] == "transcription_session.updated"
        for part in (audio[:cut], audio[cut:]):
            # 24 kHz, the beta default: resampled by the edge, so the item holds 16 kHz samples.
            await send_paced(
                lambda a: conn.send({"type": "input_audio_buffer.append", "audio": a}), pcm16(part, 24000), 48000
            )
            await conn.send({"type": "input_audio_buffer.commit"})
        events = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 2))
    assert not of_type(events, "input_audio_buffer.speech_started")
    committed = of_type(events, "input_audio_buffer.committed")
    assert [e["previous_item_id"] for e in committed] == [None, committed[0]["item_id"]]
    assert len(of_type(events, "conversation.item.created")) == 2
    completed = [assert_streamed_item(events, e["item_id"]) for e in committed]
    # The resampler's output per chunk may differ by a sample from the exact split.
    steps = [e["usage"]["output_tokens"] for e in completed]
    assert abs(steps[0] - expected_steps(cut)) <= 1
    assert abs(sum(steps) - expected_steps(cut) - expected_steps(len(audio) - cut)) <= 1


async def test_an_item_longer_than_one_generation_loses_no_audio(whole_stream_edge: EdgeServer) -> None:
    budget = steps_per_generation(REALTIME_TEST_MAX_MODEL_LEN) * STEP_SAMPLES
    audio = speech(budget / RATE + 4)
    async with client_of(whole_stream_edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        await conn.session.update(session=ga_session(None))
        await conn.recv()
        await send_paced(lambda a: conn.input_audio_buffer.append(audio=a), pcm16(audio), RATE * 2)
        await conn.input_audio_buffer.commit()
        events = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 1), timeout=120)
    (committed,) = of_type(events, "input_audio_buffer.committed")
    completed = assert_streamed_item(events, committed["item_id"])
    # Two generations: the edge cut the first at its budget and sent the rest to a second one.
    assert completed["usage"]["output_tokens"] == expected_steps(budget) + expected_steps(len(audio) - budget)


async def test_a_committed_items_final_does_not_wait_for_vllms_padding(stream_edge: EdgeServer) -> None:
    """At the default margin the final goes out at the step whose text stands for 160 ms past the
    commit, not after vLLM's right padding; the next item streams on after it."""
    audio = speech(4)
    cut = 3 * RATE
    margin_samples = Settings.model_fields["realtime_stream_margin_ms"].default * RATE // 1000
    async with client_of(stream_edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        await conn.session.update(session=ga_session(None))
        await conn.recv()
        append = lambda a: conn.input_audio_buffer.append(audio=a)  # noqa: E731
        await send_paced(append, pcm16(audio[:cut]), RATE * 2)
        await conn.input_audio_buffer.commit()
        events = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 1))
        await send_paced(append, pcm16(audio[cut:]), RATE * 2)
        await conn.input_audio_buffer.commit()
        events += await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 1))
    committed = of_type(events, "input_audio_buffer.committed")
    first, second = (assert_streamed_item(events, e["item_id"]) for e in committed)
    assert first["usage"]["output_tokens"] == steps_to_write(cut + margin_samples) < expected_steps(cut)
    assert second["usage"]["output_tokens"] == steps_to_write(len(audio) - cut + margin_samples)


async def test_vllm_going_away_ends_the_session_with_an_error(
    make_edge: Callable[..., EdgeServer], realtime_vllm_url: str
) -> None:
    proxy = CuttableProxy(int(realtime_vllm_url.rsplit(":", 1)[1]))
    edge = make_edge(realtime_vllm_url=await proxy.start(), realtime_engine="stream")
    events: list[dict] = []
    async with client_of(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        await conn.session.update(session=ga_session(None))
        await conn.recv()
        await send_paced(lambda a: conn.input_audio_buffer.append(audio=a), pcm16(speech(2)), RATE * 2)
        events += await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.delta", 1))
        proxy.cut()
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(60):
                while True:
                    events.append(json.loads(await conn.recv_bytes()))
    item_id = events[0]["item_id"]
    failed = of_type(events, f"{TRANSCRIPTION}.failed")
    assert [e["item_id"] for e in failed] == [item_id]
    assert failed[0]["error"]["code"] == "backend_unavailable"
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "backend_unavailable"
    assert events.index(failed[0]) < len(events) - 1
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_stream_engine_without_a_realtime_model_refuses_the_session(
    make_edge: Callable[..., EdgeServer],
) -> None:
    edge = make_edge(realtime_engine="stream")  # the main vLLM serves no realtime model
    async with client_of(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        error = json.loads(await conn.recv_bytes())
        assert error["type"] == "error"
        assert error["error"]["code"] == "backend_unavailable"
        assert "no realtime-capable model" in error["error"]["message"]
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv_bytes()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_clear_drops_the_item_in_progress(whole_stream_edge: EdgeServer) -> None:
    audio = speech(4)
    async with client_of(whole_stream_edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        await conn.session.update(session=ga_session(None))
        await conn.recv()
        append = lambda a: conn.input_audio_buffer.append(audio=a)  # noqa: E731
        await send_paced(append, pcm16(audio[: 2 * RATE]), RATE * 2)
        events = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.delta", 1))
        await conn.input_audio_buffer.clear()
        events += await collect(conn.recv_bytes, count("input_audio_buffer.cleared", 1))
        await send_paced(append, pcm16(audio[2 * RATE :]), RATE * 2)
        await conn.input_audio_buffer.commit()
        events += await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 1))
    cleared_item = events[0]["item_id"]
    (committed,) = of_type(events, "input_audio_buffer.committed")
    assert committed["item_id"] != cleared_item
    assert not [e for e in events if e["type"].endswith(".completed") and e["item_id"] == cleared_item]
    completed = assert_streamed_item(events, committed["item_id"])
    assert completed["usage"]["output_tokens"] == expected_steps(2 * RATE)


async def test_the_tcp_stream_uses_the_streaming_engine(
    make_edge: Callable[..., EdgeServer], realtime_vllm_url: str
) -> None:
    edge = make_edge(host="127.0.0.1", tcp_port=free_port(), realtime_vllm_url=realtime_vllm_url)
    recording = build_recording([JFK_1, JFK_2])
    assert edge.settings.tcp_port is not None
    lines = await tcp_stream(edge.settings.tcp_port, pcm16(recording.audio))
    assert [line["type"] for line in lines] == ["transcription"] * 2
    for line, (start_ms, end_ms) in zip(lines, recording.truth_ms, strict=True):
        assert line["text"]
        assert abs(line["audio_start_ms"] - start_ms) <= TOLERANCE_MS
        assert line["audio_end_ms"] >= end_ms - TOLERANCE_MS  # an item may end where its audio was streamed to


@pytest.fixture(scope="module")
def realtime_only_edge(realtime_vllm_url: str) -> Iterator[EdgeServer]:
    """One deployment: the edge's only vLLM serves the realtime model, for files and live sessions."""
    edge = EdgeServer(edge_settings(realtime_vllm_url, served_model_name=REALTIME_SERVED_NAME)).start()
    yield edge
    edge.stop()


def test_files_get_word_timestamps_from_the_realtime_model(realtime_only_edge: EdgeServer) -> None:
    client = openai.OpenAI(base_url=f"{realtime_only_edge.url}/v1", api_key="unused", max_retries=0)
    with open(DATA / "jfk.flac", "rb") as f:
        plain = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert plain.text  # vLLM serves the realtime model's offline transcription too
    with open(DATA / "jfk.flac", "rb") as f:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=f, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    assert result.words is not None and result.segments is not None
    assert [w.word for w in result.words] == result.text.split()
    assert all(0 <= w.start <= w.end <= result.duration for w in result.words)
    assert [w.start for w in result.words] == sorted(w.start for w in result.words)
    assert [s.text for s in result.segments] == [result.text]


def test_word_timestamps_need_a_realtime_model(stream_edge: EdgeServer) -> None:
    """A request naming the main vLLM's model asks for that model's words, which it does not have
    (an alias gets them from the realtime vLLM, see `test_realtime_words`)."""
    client = openai.OpenAI(base_url=f"{stream_edge.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="realtime model") as refused:
        with open(DATA / "jfk.flac", "rb") as f:
            client.audio.transcriptions.create(
                model=SERVED_MODEL, file=f, response_format="verbose_json", timestamp_granularities=["word"]
            )
    assert refused.value.body["param"] == "timestamp_granularities"  # type: ignore[index]


async def test_a_conversation_answers_a_streamed_item(stream_edge: EdgeServer) -> None:
    """A conversation session on the streaming engine: its turn gets a reply and its transcript."""
    recording = build_recording([JFK_1])
    session = ga_session(VAD)
    session.update(type="realtime", max_output_tokens=4)
    async with client_of(stream_edge).realtime.connect(model=SERVED_MODEL) as conn:
        await conn.recv()
        await conn.session.update(session=session)
        assert (await conn.recv()).type == "session.updated"
        await send_paced(lambda a: conn.input_audio_buffer.append(audio=a), pcm16(recording.audio), RATE * 2)
        events = await collect(
            conn.recv_bytes,
            lambda seen: bool(of_type(seen, "response.done")) and bool(of_type(seen, f"{TRANSCRIPTION}.completed")),
        )
    (completed,) = of_type(events, f"{TRANSCRIPTION}.completed")
    assert_streamed_item(events, completed["item_id"])
    committed = of_type(events, "input_audio_buffer.committed")[0]
    assert events.index(committed) < events.index(of_type(events, "response.created")[0])
    assert of_type(events, "response.done")[0]["response"]["status"] in ("completed", "incomplete")
