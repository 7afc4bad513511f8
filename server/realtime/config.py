"""A realtime session's effective configuration, independent of the wire protocol."""

from dataclasses import dataclass, field

from vad import StreamParams


@dataclass(frozen=True)
class AudioFormat:
    """Encoding of `input_audio_buffer.append` payloads: `pcm16`, `pcmu` or `pcma` at `rate` Hz."""

    encoding: str = "pcm16"
    rate: int = 24000

    def seconds(self, payload_bytes: int) -> float:
        """How much audio `payload_bytes` of this format hold."""
        return payload_bytes / ((2 if self.encoding == "pcm16" else 1) * self.rate)


@dataclass(frozen=True)
class Transcription:
    """How turns are transcribed; `prompt` is kept for the client's sake (Voxtral ignores it)."""

    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    partial_interval_ms: int = 0


@dataclass(frozen=True)
class Assistant:
    """Voice-assistant mode: after each turn, a chat reply to the turn's audio."""

    enabled: bool = False
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float = 0.8


@dataclass(frozen=True)
class SessionConfig:
    """`turn_detection`: OpenAI's `server_vad` parameters, the VAD's own type; None means the
    client commits turns itself."""

    audio_format: AudioFormat = field(default_factory=AudioFormat)
    turn_detection: StreamParams | None = field(default_factory=StreamParams)
    transcription: Transcription = field(default_factory=Transcription)
    assistant: Assistant = field(default_factory=Assistant)
