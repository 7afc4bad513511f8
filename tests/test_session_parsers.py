"""Fast tests of pure code: the realtime session models (shared by `session.update` and the
client-secret routes) and the regrouping of server-sent events. No server, no vLLM."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from server.api.sse import sse, sse_events
from server.core.errors import APIError
from server.realtime.config import AudioFormat, SessionConfig
from server.realtime.protocols.openai import OpenAIProtocol
from server.realtime.protocols.openai_session import parse_beta_session, parse_ga_session, session_object
from server.realtime.session import RealtimeSession
from vad import StreamParams


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
    )
    assert config.audio_format == AudioFormat("pcm16", 16000)
    assert (config.transcription.model, config.transcription.language) == ("m", "fr")
    assert config.transcription.partial_interval_ms == 500
    assert config.turn_detection == StreamParams(threshold=0.3)  # the others keep their defaults
    assert config.kind == "transcription"
    conversation = parse_ga_session(
        {"type": "realtime", "instructions": "Be brief.", "tools": [{"type": "function", "name": "f"}]}, config
    )
    assert conversation.kind == "realtime" and conversation.conversation.instructions == "Be brief."
    assert [tool.name for tool in conversation.conversation.tools] == ["f"]
    assert conversation.audio_format == config.audio_format  # the audio settings carry over
    semantic = parse_ga_session(given(turn_detection={"type": "semantic_vad", "eagerness": "high"}), config)
    assert semantic.turn.type == "semantic_vad" and semantic.turn_detection.silence_duration_ms == 300
    assert parse_ga_session({}, config) == config  # nothing named: nothing changes


def test_turn_detection_null_means_manual_commits_and_g711_is_8_khz() -> None:
    assert ga({"turn_detection": None}).turn_detection is None
    assert ga({"format": {"type": "audio/pcmu"}}).audio_format == AudioFormat("pcmu", 8000)
    assert ga({"format": {"type": "audio/pcm"}}).audio_format == AudioFormat("pcm16", 24000)


def test_an_update_changes_only_the_fields_it_names() -> None:
    slow = ga({"turn_detection": {"silence_duration_ms": 900}, "transcription": {"language": "fr"}})
    config = parse_ga_session(given(turn_detection={"threshold": 0.7}), slow)
    assert config.turn_detection == StreamParams(threshold=0.7, silence_duration_ms=900)  # its silence window kept
    assert config.transcription.language == "fr"
    manual = parse_ga_session(given(turn_detection=None), config)
    assert manual.turn_detection is None
    assert parse_ga_session(given(turn_detection={"threshold": 0.7}), manual).turn_detection == StreamParams(
        threshold=0.7
    )  # from manual commits: the fields not named take their defaults
    beta = parse_beta_session({"turn_detection": {"prefix_padding_ms": 0}}, config)
    assert beta.turn_detection == StreamParams(threshold=0.7, prefix_padding_ms=0, silence_duration_ms=900)


def test_an_invalid_update_changes_nothing() -> None:
    current = ga({"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": {"threshold": 0.3}})
    valid_then_invalid = {
        **given(format={"type": "audio/pcmu"}, transcription={"language": "de"}, turn_detection=None),
        "type": "realtime",
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "nonsense"}}],
    }
    with pytest.raises(APIError) as error:
        parse_ga_session(valid_then_invalid, current)
    assert error.value.param == "session.tools.0.parameters"
    assert current == ga({"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": {"threshold": 0.3}})
    beta = {"input_audio_format": "g711_alaw", "turn_detection": {"threshold": 0.9, "silence_duration_ms": -1}}
    assert refused(parse_beta_session, beta).param == "session.turn_detection.silence_duration_ms"


class RecordingSession:
    """The part of a session `session.update` uses: its config, and the updates applied to it."""

    def __init__(self) -> None:
        self.config = SessionConfig()
        self.updates: list[SessionConfig] = []

    async def update(self, config: SessionConfig) -> None:
        self.updates.append(config)
        self.config = config


def test_an_invalid_session_update_answers_an_error_and_leaves_the_session_as_it_was() -> None:
    session = RecordingSession()
    protocol = OpenAIProtocol(beta=False, default_model="served", lifetime_s=60)
    update = {
        "type": "session.update",
        "session": {**given(format={"type": "audio/pcmu"}), "type": "realtime", "tools": {}},
    }
    answers = asyncio.run(protocol.handle(json.dumps(update), cast(RealtimeSession, session)))
    assert [(a["type"], a["error"]["param"]) for a in answers] == [("error", "session.tools")]
    assert session.updates == [] and session.config == SessionConfig()


def given(**audio_input: Any) -> dict[str, Any]:
    return {"audio": {"input": audio_input}}


IN = "session.audio.input"


@pytest.mark.parametrize(
    ("session", "param", "code"),
    [
        ({"type": "translation"}, "session.type", "unsupported_value"),
        ({"audio": None}, "session.audio", "invalid_value"),
        (given(format={"type": "audio/pcm", "rate": 8000}), f"{IN}.format.rate", "unsupported_value"),
        (given(format={"type": "audio/mp3"}), f"{IN}.format.type", "unsupported_value"),
        (given(transcription={"language": "zz"}), f"{IN}.transcription.language", None),
        (given(transcription={"model": 5}), f"{IN}.transcription.model", "invalid_value"),
        (given(turn_detection={"type": "smart_vad"}), f"{IN}.turn_detection.type", "unsupported_value"),
        (given(turn_detection={"eagerness": "eager"}), f"{IN}.turn_detection.eagerness", "unsupported_value"),
        (given(turn_detection={"idle_timeout_ms": 5000}), f"{IN}.turn_detection.idle_timeout_ms", "unsupported_value"),
        (given(turn_detection={"threshold": 2}), f"{IN}.turn_detection.threshold", "invalid_value"),
        (given(turn_detection={"prefix_padding_ms": True}), f"{IN}.turn_detection.prefix_padding_ms", "invalid_value"),
        ({"type": "realtime", "max_output_tokens": 0}, "session.max_output_tokens", None),
        ({"type": "realtime", "tools": [{"type": "mcp"}]}, "session.tools.0.type", "unsupported_value"),
        ({"type": "realtime", "tools": [{"name": "a b"}]}, "session.tools.0.name", "invalid_value"),
        ({"type": "realtime", "prompt": {"id": "p"}}, "session.prompt", "unsupported_value"),
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


def test_the_session_object_shows_the_config_in_each_flavour() -> None:
    config = parse_beta_session({"input_audio_format": "g711_ulaw", "turn_detection": None}, SessionConfig())
    shown = {"session_id": "sess_1", "expires_at": 99, "default_model": "served"}
    transcription = {"model": "served", "language": None, "prompt": None, "partial_interval_ms": 0}
    assert list(session_object(config, beta=True, **shown).items()) == [
        ("id", "sess_1"),
        ("object", "realtime.transcription_session"),
        ("expires_at", 99),
        ("modalities", ["text"]),
        ("input_audio_format", "g711_ulaw"),
        ("input_audio_transcription", transcription),
        ("turn_detection", None),
        ("input_audio_noise_reduction", None),
        ("include", None),
    ]
    ga_shown = session_object(config, beta=False, **shown)
    assert list(ga_shown) == ["type", "id", "object", "expires_at", "audio", "include"]
    assert ga_shown["audio"] == {
        "input": {
            "format": {"type": "audio/pcmu"},  # G.711's rate is implied
            "transcription": transcription,
            "turn_detection": None,
            "noise_reduction": None,
        }
    }
    vad = session_object(SessionConfig(), beta=False, **shown)["audio"]["input"]
    assert vad["format"] == {"type": "audio/pcm", "rate": 24000}
    assert vad["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
    }


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
