"""A realtime session's effective configuration, independent of the wire protocol."""

from dataclasses import dataclass, field
from typing import Any, Literal

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
    events: bool = True  # a conversation session may turn the transcription events off; turns are transcribed anyway


@dataclass(frozen=True)
class TurnOptions:
    """What the end of a turn does beyond the VAD's parameters: OpenAI's `turn_detection` type
    (`semantic_vad` is served as `server_vad` with a silence set by its `eagerness`) and, in a
    conversation session, whether a turn starts a response and whether speech cancels one."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True


SEMANTIC_MAX_WAIT_MS = {"low": 8000, "medium": 4000, "auto": 4000, "high": 2000}
"""`semantic_vad`'s longest wait after speech for each `eagerness`, as OpenAI documents it."""
SEMANTIC_COMPLETE = {"low": 0.7, "medium": 0.5, "auto": 0.5, "high": 0.3}
"""The turn model's probability that ends a `semantic_vad` turn at a pause, for each `eagerness`:
an eager session ends on a weaker "finished", a patient one waits for a surer one."""
SEMANTIC_SILENCE_MS = {"low": 1000, "medium": 500, "auto": 500, "high": 300}
"""`semantic_vad` served as `server_vad` (no turn model): the silence for each `eagerness`."""


@dataclass(frozen=True)
class FunctionTool:
    name: str
    description: str | None
    parameters: dict[str, Any]


@dataclass(frozen=True)
class NamedFunction:
    """A `tool_choice` that forces one function."""

    name: str


ToolChoice = Literal["auto", "none", "required"] | NamedFunction


MAX_REPLY_TOKENS = 4096
"""The most tokens one reply may take (OpenAI's bound on `max_output_tokens`), and what a reply gets
when neither the client nor `MAX_OUTPUT_TOKENS` bounds it."""


@dataclass(frozen=True)
class Conversation:
    """A conversation session's reply settings (OpenAI's `session.type: "realtime"`); the fields
    kept only to be shown back (`output`: voice, format, speed; `tracing`, `truncation`) change
    nothing here."""

    model: str | None = None
    instructions: str | None = None
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = "auto"
    max_output_tokens: int | None = None  # None: `inf`, as far as MAX_OUTPUT_TOKENS and the context allow
    output: dict[str, Any] | None = None
    tracing: Any = None
    truncation: Any = "auto"


@dataclass(frozen=True)
class SessionConfig:
    """`kind`: a transcription session or a conversation (`realtime`) one, with its `conversation`
    settings. `turn_detection`: the VAD's parameters, the VAD's own type; None means the client
    commits turns itself."""

    kind: Literal["transcription", "realtime"] = "transcription"
    audio_format: AudioFormat = field(default_factory=AudioFormat)
    turn_detection: StreamParams | None = field(default_factory=StreamParams)
    turn: TurnOptions = field(default_factory=TurnOptions)
    transcription: Transcription = field(default_factory=Transcription)
    conversation: Conversation = field(default_factory=Conversation)
