"""The simple protocol at `/ws`: `{"type": "audio", "data": base64 PCM16 16 kHz}` in,
`{"type": "transcription", "text", "timestamp", "audio_start_ms", "audio_end_ms"}` out per turn,
`{"type": "error", "code", "message"}` on failures. Server VAD with OpenAI's defaults; nothing
else is configurable.

The message is the one the original voice stack's clients parse: `timestamp` is when the
transcript was ready, in ISO 8601 UTC to the second (`2024-01-01T12:00:00Z`, the very form they
parse). Its `confidence` is left out: vLLM gives no token probabilities for Voxtral, and an
invented number would mislead. The raw TCP stream (`transports/tcp.py`) sends the same messages as JSON
lines.
"""

import base64
import binascii
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from server.core import metrics
from server.core.errors import APIError
from server.realtime import events as ev
from server.realtime.config import AudioFormat, SessionConfig
from server.realtime.protocols.client_text import parse_json
from server.realtime.session import RealtimeSession

Message = dict[str, Any]


class TranscriptionMessage(BaseModel):
    type: Literal["transcription"] = "transcription"
    text: str
    timestamp: str
    audio_start_ms: int
    audio_end_ms: int


class ErrorMessage(BaseModel):
    type: Literal["error"] = "error"
    code: str | None
    message: str


def iso_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC to the second with a `Z`, the form the original stack's clients parse."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class SimpleProtocol:
    def initial_config(self) -> SessionConfig:
        return SessionConfig(audio_format=AudioFormat("pcm16", 16000))

    def streams_with(self, model: str) -> None:
        pass  # this protocol names no model

    def opening(self, config: SessionConfig) -> list[Message]:
        return []

    def error(self, exc: APIError) -> Message:
        return ErrorMessage(code=exc.code, message=exc.message).model_dump()

    async def handle(self, text: str, session: RealtimeSession) -> list[Message]:
        try:
            message = parse_json(text)
        except APIError as exc:
            return [self.error(exc)]
        if not isinstance(message, dict) or message.get("type") != "audio":
            return [
                self.error(APIError(400, 'Send {"type": "audio", "data": base64 PCM16 16 kHz}.', code="unknown_event"))
            ]
        try:
            payload = base64.b64decode(message.get("data") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            return [self.error(APIError(400, "`data` is not valid base64.", code="invalid_value"))]
        await session.append(payload)
        metrics.count_key_audio(session.config.audio_format.seconds(len(payload)))
        return []

    def render(self, event: ev.Event) -> list[Message]:
        if isinstance(event, ev.TranscriptCompleted):
            transcription = TranscriptionMessage(
                text=event.transcript,
                timestamp=iso_timestamp(datetime.now(UTC)),
                audio_start_ms=event.audio_start_ms,
                audio_end_ms=event.audio_end_ms,
            )
            return [transcription.model_dump()]
        if isinstance(event, ev.TranscriptFailed):
            return [ErrorMessage(code=event.code, message=event.message).model_dump()]
        return []
