"""Render a transcript in OpenAI's five response formats: json, text, verbose_json, srt, vtt.

vLLM gives Voxtral's text only; segments and their times come from the edge's speech
segmentation, one segment per chunk sent to vLLM (see `server.files.transcription`).
"""

import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from server.core.words import Word


@dataclass
class Segment:
    """A stretch of the original audio and what was said in it."""

    start: float
    end: float
    text: str


@dataclass
class Transcript:
    text: str
    duration: float
    language: str | None
    segments: list[Segment] = field(default_factory=list)
    words: list[Word] | None = None  # from a realtime model's steps only


def _compression_ratio(text: str) -> float:
    """Whisper's repetition signal: how well the text compresses (high = looping output)."""
    raw = text.encode()
    return round(len(raw) / len(zlib.compress(raw)), 3) if raw else 0.0


def verbose_json(transcript: Transcript, task: str, temperature: float) -> dict[str, Any]:
    """The `verbose_json` body with every field OpenAI's schema requires.

    vLLM does not return token ids or log-probabilities for transcriptions, so `tokens` is empty
    and `avg_logprob`/`no_speech_prob` are 0.0; `compression_ratio` is computed from the text.
    """
    words = {} if transcript.words is None else {"words": [asdict(w) for w in transcript.words]}
    return {
        "task": "translate" if task == "translate" else "transcribe",
        "language": transcript.language or "unknown",
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "segments": [
            {
                "id": i,
                "seek": int(seg.start * 100),
                "start": round(seg.start, 3),
                "end": round(seg.end, 3),
                "text": seg.text,
                "tokens": [],
                "temperature": temperature,
                "avg_logprob": 0.0,
                "compression_ratio": _compression_ratio(seg.text),
                "no_speech_prob": 0.0,
            }
            for i, seg in enumerate(transcript.segments)
        ],
        **words,
        "usage": duration_usage(transcript.duration),
    }


def duration_usage(duration: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(duration)}


def _timestamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def srt(transcript: Transcript) -> str:
    cues = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(transcript.segments, start=1)
    ]
    return "\n".join(cues)


def vtt(transcript: Transcript) -> str:
    cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in transcript.segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def response_body(
    transcript: Transcript, response_format: str, *, task: str, temperature: float
) -> dict[str, Any] | str:
    """The body of the answer in `response_format`: a JSON object, or the text of text/srt/vtt.

    The HTTP routes wrap it in a response (`render`); the RunPod worker returns it as the job output.
    """
    match response_format:
        case "text":
            return transcript.text + "\n"
        case "srt":
            return srt(transcript)
        case "vtt":
            return vtt(transcript)
        case "verbose_json":
            return verbose_json(transcript, task, temperature)
        case _:
            return {"text": transcript.text, "usage": duration_usage(transcript.duration)}


_TEXT_MEDIA_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt"}


def render(transcript: Transcript, response_format: str, *, task: str, temperature: float) -> Response:
    """The HTTP response for `transcript` in `response_format`."""
    body = response_body(transcript, response_format, task=task, temperature=temperature)
    if isinstance(body, str):
        return PlainTextResponse(body, media_type=_TEXT_MEDIA_TYPES.get(response_format, "text/plain"))
    return JSONResponse(body)
