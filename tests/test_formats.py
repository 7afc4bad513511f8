"""OpenAI's response formats rendered from a transcript (no vLLM needed)."""

import json
from typing import get_args

import pytest

from server.files.formats import Segment, Transcript, render, response_body, srt, verbose_json, vtt
from server.protocol.audio import ResponseFormat
from tests.conftest import OPENAI_SEGMENT_FIELDS

TRANSCRIPT = Transcript(
    text="Hello there. General Kenobi.",
    duration=3661.2504,
    language="en",
    segments=[Segment(0.0, 1.5, "Hello there."), Segment(3600.25, 3661.2504, "General Kenobi.")],
)


def test_srt_numbers_cues_from_one_with_comma_milliseconds() -> None:
    assert srt(TRANSCRIPT) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:00:00,250 --> 01:01:01,250\nGeneral Kenobi.\n"
    )


def test_vtt_has_its_header_and_dot_milliseconds() -> None:
    assert vtt(TRANSCRIPT) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n01:00:00.250 --> 01:01:01.250\nGeneral Kenobi.\n"
    )


def test_timestamps_round_to_the_millisecond_and_carry() -> None:
    transcript = Transcript("x", 60.0, None, [Segment(59.9996, 60.0, "x")])
    assert "00:01:00,000 --> 00:01:00,000" in srt(transcript)


def test_no_segments_give_empty_subtitles() -> None:
    empty = Transcript("", 0.0, None, [])
    assert srt(empty) == ""
    assert vtt(empty) == "WEBVTT\n\n"


def test_verbose_json_has_every_field_openai_requires() -> None:
    body = verbose_json(TRANSCRIPT, "transcribe", 0.2)
    assert body["task"] == "transcribe"
    assert (body["language"], body["duration"], body["text"]) == ("en", 3661.25, TRANSCRIPT.text)
    assert body["usage"] == {"type": "duration", "seconds": 3662}
    first, second = body["segments"]
    assert set(first) == OPENAI_SEGMENT_FIELDS
    assert (first["id"], first["seek"], first["start"], first["end"]) == (0, 0, 0.0, 1.5)
    assert (second["id"], second["seek"], second["start"], second["end"]) == (1, 360025, 3600.25, 3661.25)
    assert first["tokens"] == [] and first["temperature"] == 0.2
    assert first["compression_ratio"] > 0


def test_verbose_json_of_a_translation_with_unknown_language() -> None:
    body = verbose_json(Transcript("", 0.4, None, []), "translate", 0.0)
    assert (body["task"], body["language"], body["segments"]) == ("translate", "unknown", [])
    assert body["usage"]["seconds"] == 1


def test_repetitive_text_compresses_better() -> None:
    looping = verbose_json(Transcript("", 1, None, [Segment(0, 1, "la " * 100)]), "transcribe", 0)
    normal = verbose_json(Transcript("", 1, None, [Segment(0, 1, "The quick brown fox jumps.")]), "transcribe", 0)
    assert looping["segments"][0]["compression_ratio"] > 5 > normal["segments"][0]["compression_ratio"]


@pytest.mark.parametrize(
    ("response_format", "media_type"),
    [
        ("json", "application/json"),
        ("verbose_json", "application/json"),
        ("text", "text/plain"),
        ("srt", "application/x-subrip"),
        ("vtt", "text/vtt"),
    ],
)
def test_render_gives_each_format_its_body_and_media_type(response_format: str, media_type: str) -> None:
    assert response_format in get_args(ResponseFormat)
    response = render(TRANSCRIPT, response_format, task="transcribe", temperature=0.0)
    assert response.media_type == media_type
    body = response.body.decode()
    expected = response_body(TRANSCRIPT, response_format, task="transcribe", temperature=0.0)
    if isinstance(expected, dict):
        assert json.loads(body) == expected
    else:
        assert body == expected


def test_json_and_text_bodies() -> None:
    assert response_body(TRANSCRIPT, "json", task="transcribe", temperature=0) == {
        "text": TRANSCRIPT.text,
        "usage": {"type": "duration", "seconds": 3662},
    }
    assert response_body(TRANSCRIPT, "text", task="transcribe", temperature=0) == TRANSCRIPT.text + "\n"
