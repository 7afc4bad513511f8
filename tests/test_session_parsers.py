"""Fast tests of pure code: the realtime session parsers (shared by `session.update` and the
client-secret routes) and the regrouping of server-sent events. No server, no vLLM."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.errors import APIError
from server.realtime.config import AudioFormat, SessionConfig, TurnDetection
from server.realtime.openai_protocol import parse_beta_session, parse_ga_session
from server.sse import sse, sse_events


def ga(audio_input: dict[str, Any], **session: Any) -> SessionConfig:
    return parse_ga_session({"type": "transcription", **given(**audio_input), **session}, SessionConfig())


def refused(parse: Any, session: Any) -> APIError:
    with pytest.raises(APIError) as error:
        parse(session, SessionConfig())
    assert error.value.status == 400
    return error.value


def test_a_ga_session_sets_each_field_it_names_and_keeps_the_rest() -> None:
    config = ga(
        {
            "format": {"type": "audio/pcm", "rate": 16000},
            "transcription": {"model": "m", "language": "fr", "partial_interval_ms": 500},
            "turn_detection": {"type": "server_vad", "threshold": 0.3},
        },
        assistant={"enabled": True, "temperature": 0},
    )
    assert config.audio_format == AudioFormat("pcm16", 16000)
    assert (config.transcription.model, config.transcription.language) == ("m", "fr")
    assert config.transcription.partial_interval_ms == 500
    assert config.turn_detection == TurnDetection(threshold=0.3)  # the others keep their defaults
    assert config.assistant.enabled and config.assistant.temperature == 0
    assert parse_ga_session({}, config) == config  # nothing named: nothing changes


def test_turn_detection_null_means_manual_commits_and_g711_is_8_khz() -> None:
    assert ga({"turn_detection": None}).turn_detection is None
    assert ga({"format": {"type": "audio/pcmu"}}).audio_format == AudioFormat("pcmu", 8000)
    assert ga({"format": {"type": "audio/pcm"}}).audio_format == AudioFormat("pcm16", 24000)


def given(**audio_input: Any) -> dict[str, Any]:
    return {"audio": {"input": audio_input}}


IN = "session.audio.input"


@pytest.mark.parametrize(
    ("session", "param", "code"),
    [
        ({"type": "realtime"}, "session.type", "unsupported_value"),
        ({"audio": None}, "session.audio", "invalid_value"),
        (given(format={"type": "audio/pcm", "rate": 8000}), f"{IN}.format.rate", "unsupported_value"),
        (given(format={"type": "audio/mp3"}), f"{IN}.format.type", "unsupported_value"),
        (given(transcription={"language": "zz"}), f"{IN}.transcription.language", None),
        (given(transcription={"model": 5}), f"{IN}.transcription.model", "invalid_value"),
        (given(turn_detection={"type": "semantic_vad"}), f"{IN}.turn_detection.type", "unsupported_value"),
        (given(turn_detection={"threshold": 2}), f"{IN}.turn_detection.threshold", "invalid_value"),
        (given(turn_detection={"prefix_padding_ms": True}), f"{IN}.turn_detection.prefix_padding_ms", "invalid_value"),
        ({"assistant": {"enabled": "yes"}}, "session.assistant.enabled", "invalid_value"),
        ({"assistant": {"temperature": 3}}, "session.assistant.temperature", "invalid_value"),
        ({"assistant": {"max_output_tokens": 0}}, "session.assistant.max_output_tokens", "invalid_value"),
    ],
)
def test_a_bad_ga_field_is_refused_naming_the_field(session: dict[str, Any], param: str, code: str | None) -> None:
    error = refused(parse_ga_session, session)
    assert error.param == param
    if code is not None:
        assert error.code == code


def test_a_beta_session_and_its_errors() -> None:
    config = parse_beta_session(
        {"input_audio_format": "g711_alaw", "input_audio_transcription": {"language": "de"}, "turn_detection": None},
        SessionConfig(),
    )
    assert config.audio_format == AudioFormat("pcma", 8000)
    assert config.transcription.language == "de" and config.turn_detection is None
    assert parse_beta_session({"input_audio_format": "pcm16"}, SessionConfig()).audio_format == AudioFormat(
        "pcm16", 24000
    )
    assert refused(parse_beta_session, {"input_audio_format": "opus"}).param == "session.input_audio_format"
    assert refused(parse_beta_session, []).param == "session"
    error = refused(parse_beta_session, {"input_audio_transcription": {"prompt": 1}})
    assert error.param == "session.input_audio_transcription.prompt"


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def regroup(data: bytes, size: int) -> list[str]:
    return [event async for event in sse_events(chunks_of(data, size))]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_sse_events_are_regrouped_whole_whatever_the_chunking(size: int) -> None:
    events = [sse({"text": "héllo wörld ✓"}), sse({"n": 2}), "data: [DONE]\n\n"]
    stream = "".join(events).encode()  # multi-byte characters split across chunks at small sizes
    assert asyncio.run(regroup(stream, size)) == events
    # blank keep-alive lines are skipped, and a last event without its blank line is kept
    assert asyncio.run(regroup(b"\n\n" + stream + b"data: tail", size)) == [*events, "data: tail"]
