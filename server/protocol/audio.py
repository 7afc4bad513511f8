"""OpenAI's transcription/translation request (`POST /v1/audio/transcriptions|translations`).

One model validates the multipart form (values arrive as text: `"0.2"`, `"true"`) and the JSON
body (typed values: `temperature: true` or `[]` is refused, not read as a number). The form adds
the uploaded `file`; JSON carries the audio as `url`. Unknown fields are ignored, as vLLM's own
fields (`max_completion_tokens`, ...) come along from edges that use this one as their backend.
"""

from typing import Annotated, Any, Literal

from fastapi import UploadFile
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from server.protocol.request_body import loads_bounded

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]


def _not_bool(value: Any) -> Any:
    """Pydantic reads `true` as 1.0 for a float; a number field takes numbers (or their text) only."""
    if isinstance(value, bool):
        raise ValueError("Input should be a number, not a boolean")
    return value


Number = Annotated[float, BeforeValidator(_not_bool)]
WholeNumber = Annotated[int, BeforeValidator(_not_bool)]


class ServerVadStrategy(BaseModel):
    """`chunking_strategy` `server_vad`: every speech region, as these parameters define it, is a chunk."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["server_vad"]
    threshold: Number = Field(0.5, ge=0.0, le=1.0, description="Speech probability threshold.")
    prefix_padding_ms: WholeNumber = Field(300, ge=0, le=10_000, description="Audio kept before speech.")
    silence_duration_ms: WholeNumber = Field(200, ge=0, le=10_000, description="Pause that ends a region.")


def _strategy(value: Any) -> Any:
    """`"auto"` is the default (None); a form sends the object as JSON text."""
    if value in (None, "auto"):
        return None
    if isinstance(value, str):
        try:
            value = loads_bounded(value) if value.lstrip().startswith("{") else None
        except ValueError:
            value = None
        if value is None:
            raise ValueError('must be "auto" or {"type": "server_vad", ...}')
    return value


class AudioRequestBody(BaseModel):
    """The request as a JSON object: the audio is named by `url`."""

    # `url` is checked by the parser (a missing one is OpenAI's `missing_audio` error) but required
    # in the description; the form below needs `file` or `url`.
    model_config = ConfigDict(extra="ignore", json_schema_extra={"required": ["url"]})

    url: str | None = Field(
        None,
        description="Extension: the audio as an http(s) URL, a `data:` URL, or a path under the server's "
        "`MEDIA_DIR`. Instead of `file`.",
    )
    model: str | None = Field(None, description="The served model or one of its aliases (e.g. `whisper-1`).")
    language: str | None = Field(None, description="ISO-639-1 code of the audio's language (transcriptions).")
    prompt: str | None = Field(None, description="Accepted and ignored: vLLM ignores it for Voxtral.")
    response_format: ResponseFormat = "json"
    temperature: Number = Field(0.0, ge=0.0, le=1.0)
    stream: bool = Field(False, description="Server-sent events (with `json` or `text`).")
    timestamp_granularities: list[Literal["segment", "word"]] = Field(
        default_factory=list,
        description="`segment` and `word` (need `verbose_json`); `word` only for transcriptions by a realtime "
        "model (Voxtral Realtime), refused otherwise. In a form also as `timestamp_granularities[]`.",
    )
    chunking_strategy: Annotated[
        ServerVadStrategy | None,
        BeforeValidator(_strategy),
        WithJsonSchema({"anyOf": [{"type": "string", "const": "auto"}, ServerVadStrategy.model_json_schema()]}),
    ] = Field(
        None,
        description='`"auto"` (the default) or a `server_vad` object; in a form as JSON text or as '
        "`chunking_strategy[type]`... fields.",
    )
    include: list[str] = Field(default_factory=list, description="No values are available for Voxtral.")


class AudioRequestForm(AudioRequestBody):
    """The request as a multipart form: the audio is the uploaded `file` (or `url`)."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": ["file"]}, {"required": ["url"]}]})

    file: Annotated[UploadFile | None, WithJsonSchema({"type": "string", "format": "binary"})] = Field(
        None, description="The audio file, in any format FFmpeg reads."
    )
