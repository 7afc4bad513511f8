"""The OpenAI SDK's realtime clients (GA and beta) against the edge's `/v1/realtime`."""

import json
from collections.abc import Callable

import pytest
from realtime_helpers import (
    JFK_1,
    JFK_2,
    SILERO_1,
    TOLERANCE_MS,
    TRANSCRIPTION,
    VAD,
    alaw,
    build_recording,
    collect,
    count,
    metric_value,
    of_type,
    openai_client,
    pcm16,
    send_paced,
    ulaw,
)

from tests.conftest import SERVED_MODEL, EdgeServer


def assert_turns(events: list[dict], truth_ms: list[tuple[int, int]], *, beta: bool = False) -> None:
    """One turn per utterance, each in OpenAI's event order, times near the truth, transcripts in turn order."""
    assert all(e["event_id"].startswith("event_") for e in events)
    started = of_type(events, "input_audio_buffer.speech_started")
    assert len(started) == len(truth_ms)
    item_ids = [e["item_id"] for e in started]
    previous = None
    for item_id, (start_ms, end_ms) in zip(item_ids, truth_ms, strict=False):
        mine = [e for e in events if item_id in (e.get("item_id"), (e.get("item") or {}).get("id"))]
        kinds = [e["type"] for e in mine if not e["type"].endswith(".delta")]
        items = ["conversation.item.created"] if beta else ["conversation.item.added", "conversation.item.done"]
        assert kinds == [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            *items,
            f"{TRANSCRIPTION}.completed",
        ]
        assert abs(mine[0]["audio_start_ms"] - start_ms) <= TOLERANCE_MS
        assert abs(mine[1]["audio_end_ms"] - end_ms) <= TOLERANCE_MS
        assert mine[2]["previous_item_id"] == previous
        previous = item_id
        completed = mine[-1]
        deltas = [e["delta"] for e in mine if e["type"] == f"{TRANSCRIPTION}.delta"]
        assert deltas and "".join(deltas) == completed["transcript"]
        assert completed["content_index"] == 0
        assert completed["usage"]["output_tokens"] > 0
    completed_order = [e["item_id"] for e in of_type(events, f"{TRANSCRIPTION}.completed")]
    assert completed_order == item_ids


async def test_ga_session_is_configured_and_echoed(edge: EdgeServer) -> None:
    async with openai_client(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        assert created.session.type == "transcription"
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 16000},
                        "transcription": {"model": "whisper-1", "language": "en", "partial_interval_ms": 500},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
                    }
                },
            }
        )
        updated = json.loads(await conn.recv_bytes())
    assert updated["type"] == "session.updated"
    audio_input = updated["session"]["audio"]["input"]
    assert audio_input["format"] == {"type": "audio/pcm", "rate": 16000}
    assert audio_input["transcription"] == {
        "model": "whisper-1",
        "language": "en",
        "prompt": None,
        "partial_interval_ms": 500,
    }
    assert audio_input["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 700,
    }
    assert created.session.audio.input.transcription.model == SERVED_MODEL


@pytest.mark.parametrize("real_time", [False, True], ids=["fast", "real-time"])
async def test_ga_turns_stream_in_order(edge: EdgeServer, real_time: bool) -> None:
    recording = build_recording([JFK_1, JFK_2] if real_time else [JFK_1, JFK_2, SILERO_1])
    rate = 16000 if real_time else 24000
    async with openai_client(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": rate}, "turn_detection": VAD}},
            }
        )
        assert (await conn.recv()).type == "session.updated"
        await send_paced(
            lambda audio: conn.input_audio_buffer.append(audio=audio),
            pcm16(recording.audio, rate),
            rate * 2,
            real_time=real_time,
        )
        events = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", len(recording.truth_ms)))
        typed = conn.parse_event(json.dumps(of_type(events, f"{TRANSCRIPTION}.completed")[0]))
    assert typed.transcript == of_type(events, f"{TRANSCRIPTION}.completed")[0]["transcript"]
    assert_turns(events, recording.truth_ms)


async def transcribe_live(edge: EdgeServer, audio: bytes, turns: int, real_time: bool) -> list[dict]:
    async with openai_client(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": VAD}},
            }
        )
        assert (await conn.recv()).type == "session.updated"
        await send_paced(lambda a: conn.input_audio_buffer.append(audio=a), audio, 32000, real_time=real_time)
        return await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", turns))


def eager_counts() -> tuple[float, float]:
    name = "edge_realtime_eager_transcriptions_total"
    return metric_value(name, outcome="used"), metric_value(name, outcome="discarded")


@pytest.mark.parametrize("real_time", [False, True], ids=["fast", "real-time"])
async def test_eager_finals_transcribe_the_same_audio_as_the_window_would(
    edge: EdgeServer, make_edge: Callable[..., EdgeServer], real_time: bool
) -> None:
    """The default edge transcribes a turn once its speech has paused (`REALTIME_EAGER_PAUSE_MS`)
    and releases that as the final when the silence window ends the turn there: every turn's final
    is an eager one, in OpenAI's event order, over the same audio as an edge without eager finals
    sends (the same audio token counts)."""
    recording = build_recording([JFK_1, JFK_2] if real_time else [JFK_1, JFK_2, SILERO_1])
    audio, turns = pcm16(recording.audio), len(recording.truth_ms)
    used, _ = eager_counts()
    eager = await transcribe_live(edge, audio, turns, real_time)
    assert eager_counts()[0] - used == turns
    assert_turns(eager, recording.truth_ms)
    before = eager_counts()
    plain = await transcribe_live(make_edge(realtime_eager_pause_ms=0), audio, turns, real_time)
    assert eager_counts() == before, "no eager work without the setting"
    assert_turns(plain, recording.truth_ms)

    def tokens(events: list[dict]) -> list[int]:
        return [e["usage"]["input_tokens"] for e in of_type(events, f"{TRANSCRIPTION}.completed")]

    assert tokens(eager) == tokens(plain)


async def test_beta_client_with_g711_ulaw(edge: EdgeServer) -> None:
    recording = build_recording([JFK_2, JFK_1])
    client = openai_client(edge)
    async with client.beta.realtime.connect(model="gpt-4o-transcribe", extra_query={"intent": "transcription"}) as conn:
        assert json.loads(await conn.recv_bytes())["type"] == "transcription_session.created"
        await conn.send(
            {
                "type": "transcription_session.update",
                "session": {
                    "input_audio_format": "g711_ulaw",
                    "turn_detection": VAD,
                    "input_audio_transcription": {"model": "gpt-4o-transcribe"},
                },
            }
        )
        updated = json.loads(await conn.recv_bytes())
        assert updated["type"] == "transcription_session.updated"
        assert updated["session"]["input_audio_format"] == "g711_ulaw"
        assert updated["session"]["input_audio_transcription"]["model"] == "gpt-4o-transcribe"
        await send_paced(
            lambda audio: conn.send({"type": "input_audio_buffer.append", "audio": audio}), ulaw(recording.audio), 8000
        )
        events = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 2))
    assert_turns(events, recording.truth_ms, beta=True)


async def test_manual_commit_with_g711_alaw(edge: EdgeServer) -> None:
    first, second = build_recording([JFK_1]), build_recording([JFK_2])
    async with openai_client(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcma"}, "turn_detection": None}},
            }
        )
        updated = json.loads(await conn.recv_bytes())
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        await conn.input_audio_buffer.commit(event_id="commit-too-early")
        error = json.loads(await conn.recv_bytes())
        assert error["type"] == "error"
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["event_id"] == "commit-too-early"
        for recording in (first, second):
            await send_paced(lambda audio: conn.input_audio_buffer.append(audio=audio), alaw(recording.audio), 8000)
            await conn.input_audio_buffer.commit()
        events = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 2))
    assert not of_type(events, "input_audio_buffer.speech_started")
    committed = of_type(events, "input_audio_buffer.committed")
    assert [e["previous_item_id"] for e in committed] == [None, committed[0]["item_id"]]
    completed = of_type(events, f"{TRANSCRIPTION}.completed")
    assert [e["item_id"] for e in completed] == [e["item_id"] for e in committed]
    assert [e["type"] for e in events[:3]] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]


async def test_clear_drops_the_turn_in_progress(edge: EdgeServer) -> None:
    recording = build_recording([JFK_1], gap_s=0)
    speech_end = recording.truth_ms[0][1] * 16
    follow_up = build_recording([JFK_2])
    async with openai_client(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": VAD}},
            }
        )
        await conn.recv()
        await send_paced(
            lambda audio: conn.input_audio_buffer.append(audio=audio),
            pcm16(recording.audio[: speech_end - 8000], 24000),
            48000,
        )
        await conn.input_audio_buffer.clear()
        before = await collect(conn.recv_bytes, count("input_audio_buffer.cleared", 1))
        await send_paced(
            lambda audio: conn.input_audio_buffer.append(audio=audio), pcm16(follow_up.audio, 24000), 48000
        )
        after = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 1))
    assert [e["type"] for e in before] == ["input_audio_buffer.speech_started", "input_audio_buffer.cleared"]
    dropped = before[0]["item_id"]
    assert all(e.get("item_id") != dropped for e in after)
    assert len(of_type(after, "input_audio_buffer.committed")) == 1
    shift = len(recording.audio[: speech_end - 8000]) * 1000 // 16000
    assert (
        abs(
            of_type(after, "input_audio_buffer.speech_started")[0]["audio_start_ms"]
            - (shift + follow_up.truth_ms[0][0])
        )
        <= TOLERANCE_MS
    )


async def test_bad_events_answer_errors_and_the_session_goes_on(edge: EdgeServer) -> None:
    bad = [
        ("not json", "invalid_json", None),
        (json.dumps({"type": "response.shout", "event_id": "e1"}), "unknown_event", "type"),
        (json.dumps({"type": "response.create", "event_id": "e1"}), "invalid_value", "type"),  # not a conversation
        (json.dumps({"type": "input_audio_buffer.append", "audio": "***", "event_id": "e2"}), "invalid_value", "audio"),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "event_id": "e3",
                    "session": {"type": "transcription", "audio": {"input": {"format": {"type": "audio/wav"}}}},
                }
            ),
            "unsupported_value",
            "session.audio.input.format.type",
        ),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "event_id": "e4",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}},
                    },
                }
            ),
            "unsupported_value",
            "session.audio.input.format.rate",
        ),
        (
            json.dumps({"type": "session.update", "event_id": "e5", "session": {"type": "translation"}}),
            "unsupported_value",
            "session.type",
        ),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "event_id": "e6",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}},
                    },
                }
            ),
            "invalid_value",
            "session.audio.input.turn_detection.threshold",
        ),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "event_id": "e7",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"transcription": {"model": "no-such-model"}}},
                    },
                }
            ),
            "model_not_found",
            "session.audio.input.transcription.model",
        ),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "event_id": "e8",
                    "session": {"type": "transcription", "audio": {"input": {"turn_detection": {"eagerness": 3}}}},
                }
            ),
            "unsupported_value",
            "session.audio.input.turn_detection.eagerness",
        ),
    ]
    async with openai_client(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        for raw, code, param in bad:
            await conn.send_raw(raw)
            error = json.loads(await conn.recv_bytes())
            assert error["type"] == "error", raw
            assert (error["error"]["code"], error["error"]["param"]) == (code, param), raw
            assert error["error"]["event_id"] == (None if raw == "not json" else json.loads(raw)["event_id"])
            assert error["error"]["message"]
        await conn.session.update(session={"type": "transcription"})
        updated = json.loads(await conn.recv_bytes())
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
