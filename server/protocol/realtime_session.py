"""The realtime session objects the client-secret routes take (OpenAI's GA and beta shapes), for
the OpenAPI document.

They describe; they do not validate. A session is checked by the realtime protocol's parser
(`server.realtime.openai_protocol`), the same one that applies `session.update` on a socket, so
a minted secret and a live session accept exactly the same fields and answer the same errors.
Fields not listed are accepted and ignored, as on the socket.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from server.protocol.schema import model_schema
from server.realtime import config

_TURNS = config.TurnDetection()
_ASSISTANT = config.Assistant()


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def absent(description: str | None = None) -> Any:
    """A field that may be left out but is never null (the parser refuses null there)."""
    return Field(None, description=description, json_schema_extra=_without_default)


class TranscriptionSettings(_Open):
    model: str | None = Field(None, description="The served model or an alias; absent: the served model.")
    language: str | None = Field(None, description="The spoken language's code, checked as HTTP's `language`.")
    prompt: str | None = Field(None, description="Kept and shown back; Voxtral takes no prompt.")
    partial_interval_ms: int = Field(
        0, ge=0, description="Extension: transcribe the turn in progress this often (0: no partials)."
    )


class TurnDetection(_Open):
    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(_TURNS.threshold, ge=0, le=1, description="Speech probability that starts a turn.")
    prefix_padding_ms: int = Field(_TURNS.prefix_padding_ms, ge=0, description="Audio kept before the speech.")
    silence_duration_ms: int = Field(_TURNS.silence_duration_ms, ge=0, description="Silence that ends a turn.")


class AssistantSettings(_Open):
    """Extension: a text reply from the served model after each turn."""

    enabled: bool = _ASSISTANT.enabled
    instructions: str | None = _ASSISTANT.instructions
    max_output_tokens: int | None = Field(_ASSISTANT.max_output_tokens, ge=1, description="Absent: MAX_OUTPUT_TOKENS.")
    temperature: float = Field(_ASSISTANT.temperature, ge=0, le=2)


class GAAudioFormat(_Open):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
    rate: Literal[24000, 16000, 8000] = absent("24000 (default) or 16000 for audio/pcm; 8000 for G.711.")


class GAAudioInput(_Open):
    format: GAAudioFormat = absent()
    transcription: TranscriptionSettings = absent()
    turn_detection: TurnDetection | None = Field(None, description="null: turns end with a manual commit.")


class GAAudio(_Open):
    input: GAAudioInput = absent()


class GATranscriptionSession(_Open):
    """A GA realtime session (`session.update`'s `session`); only transcription sessions are served."""

    type: Literal["transcription"] = "transcription"
    audio: GAAudio = absent()
    assistant: AssistantSettings = absent()


class BetaTranscriptionSession(_Open):
    """A beta transcription session (`transcription_session.update`'s `session`)."""

    input_audio_format: Literal["pcm16", "g711_ulaw", "g711_alaw"] = absent("pcm16 is 24 kHz.")
    input_audio_transcription: TranscriptionSettings = absent()
    turn_detection: TurnDetection | None = Field(None, description="null: turns end with a manual commit.")
    assistant: AssistantSettings = absent()


def described_as(model: type[BaseModel]) -> WithJsonSchema:
    """A JSON object field that the OpenAPI document shows as `model`."""
    return WithJsonSchema(model_schema(model))


GASessionObject = Annotated[dict[str, Any], described_as(GATranscriptionSession)]


def beta_session_properties(schema: dict[str, Any]) -> None:
    """`json_schema_extra` of a body that carries the beta session fields at its top level."""
    schema.setdefault("properties", {}).update(model_schema(BetaTranscriptionSession)["properties"])
