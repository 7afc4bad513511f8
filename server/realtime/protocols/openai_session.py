"""The realtime transcription session in OpenAI's GA and beta shapes: one set of models that
validates what clients send, renders what the server shows, and describes both in the OpenAPI
document.

What a client sends is a partial update: `session.update` (GA), `transcription_session.update`
(beta), the body of a client-secret route, or a minted secret's stored session. Each model
changes only the fields it was given (`model_fields_set`) and merges them into the session's
current `SessionConfig`; an invalid update raises an `APIError` naming the first bad field by
its dotted path (`session.audio.input.turn_detection.threshold`) and changes nothing. Fields
not listed are accepted and ignored. Types are strict, as JSON's are: `"5"` is not a number,
`true` not an integer.
"""

from dataclasses import replace
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from server.core.errors import APIError, InputError
from server.core.languages import language_code
from server.protocol.schema import model_schema
from server.realtime.config import Assistant, AudioFormat, SessionConfig, Transcription
from vad import StreamParams

GAFormatType = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
BetaFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]
GA_FORMATS: dict[str, GAFormatType] = {"pcm16": "audio/pcm", "pcmu": "audio/pcmu", "pcma": "audio/pcma"}
BETA_FORMATS: dict[str, BetaFormat] = {"pcm16": "pcm16", "pcmu": "g711_ulaw", "pcma": "g711_alaw"}
_GA_ENCODINGS = {name: encoding for encoding, name in GA_FORMATS.items()}
_BETA_ENCODINGS = {name: encoding for encoding, name in BETA_FORMATS.items()}
PCM_RATES = (24000, 16000)
G711_RATE = 8000

_VAD = StreamParams()
_ASSISTANT = Assistant()


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _absent(description: str | None = None) -> Any:
    """A field that may be left out but is never null (null is refused there)."""
    return Field(None, description=description, json_schema_extra=_without_default)


def _none_if_empty(value: str | None) -> str | None:
    return value or None


def _language(value: str | None) -> str | None:
    """The same rule as HTTP's `language` field, with its error code and message."""
    try:
        return language_code(value)
    except InputError as exc:
        raise PydanticCustomError(exc.code or "unsupported_language", exc.message) from None


def _only(choice: str, why: str) -> BeforeValidator:
    """A one-choice field whose refusal says `why` that choice is the only one."""

    def check(value: Any) -> Any:
        if value != choice:
            raise PydanticCustomError(
                "unsupported_value", "Input should be {choice} ({why})", {"choice": f"'{choice}'", "why": why}
            )
        return value

    return BeforeValidator(check)


Text = Annotated[StrictStr | None, AfterValidator(_none_if_empty)]  # "" is none too
Number = Annotated[StrictFloat, Field(allow_inf_nan=False)]


class _Update(BaseModel):
    """A part of a session update: the fields it was sent, over the current values."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": True})

    def _sent(self, *excluded: str) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set - set(excluded)}


class TranscriptionSettings(_Update):
    model: Text = Field(default=None, description="The served model or an alias; absent or null: the served model.")
    language: Annotated[StrictStr | None, AfterValidator(_language)] = Field(
        default=None, description="The spoken language's code, checked as HTTP's `language`."
    )
    prompt: Text = Field(default=None, description="Kept and shown back; Voxtral takes no prompt.")
    partial_interval_ms: StrictInt = Field(
        default=0, ge=0, description="Extension: transcribe the turn in progress this often (0: no partials)."
    )

    def applied_to(self, current: Transcription) -> Transcription:
        return replace(current, **self._sent())

    @classmethod
    def of(cls, transcription: Transcription, default_model: str | None) -> "TranscriptionSettings":
        return cls(
            model=transcription.model or default_model,
            language=transcription.language,
            prompt=transcription.prompt,
            partial_interval_ms=transcription.partial_interval_ms,
        )


class TurnDetection(_Update):
    """`server_vad` turn detection; the whole field null instead: turns end with a manual commit."""

    type: Annotated[Literal["server_vad"], _only("server_vad", "or the whole field null for manual commits")] = (
        "server_vad"
    )
    threshold: Number = Field(default=_VAD.threshold, ge=0, le=1, description="Speech probability that starts a turn.")
    prefix_padding_ms: StrictInt = Field(
        default=_VAD.prefix_padding_ms, ge=0, description="Audio kept before the speech."
    )
    silence_duration_ms: StrictInt = Field(
        default=_VAD.silence_duration_ms, ge=0, description="Silence that ends a turn."
    )

    def applied_to(self, current: StreamParams | None) -> StreamParams:
        """`current` None (manual commits): the fields not sent take their defaults."""
        return replace(current or StreamParams(), **self._sent("type"))

    @classmethod
    def of(cls, params: StreamParams | None) -> "TurnDetection | None":
        if params is None:
            return None
        return cls(
            threshold=params.threshold,
            prefix_padding_ms=params.prefix_padding_ms,
            silence_duration_ms=params.silence_duration_ms,
        )


class AssistantSettings(_Update):
    """Extension: a text reply from the served model after each turn."""

    enabled: StrictBool = _ASSISTANT.enabled
    instructions: Text = _ASSISTANT.instructions
    max_output_tokens: StrictInt | None = Field(
        default=_ASSISTANT.max_output_tokens, ge=1, description="null: MAX_OUTPUT_TOKENS."
    )
    temperature: Number = Field(default=_ASSISTANT.temperature, ge=0, le=2)

    def applied_to(self, current: Assistant) -> Assistant:
        return replace(current, **self._sent())

    @classmethod
    def of(cls, assistant: Assistant) -> "AssistantSettings":
        return cls(
            enabled=assistant.enabled,
            instructions=assistant.instructions,
            max_output_tokens=assistant.max_output_tokens,
            temperature=assistant.temperature,
        )


class GAAudioFormat(_Update):
    type: GAFormatType
    rate: Literal[24000, 16000, 8000] = _absent("24000 (default) or 16000 for audio/pcm; 8000 for G.711.")

    @field_validator("rate", mode="before")
    @classmethod
    def _rate_of_its_type(cls, rate: Any, info: ValidationInfo) -> Any:
        if "type" not in info.data:  # the type is wrong: that is the error to report
            return rate
        rates = _rates(info.data["type"])
        if rate not in rates:
            raise PydanticCustomError(
                "unsupported_value",
                "Input should be {rates} for {type}",
                {"rates": " or ".join(map(str, rates)), "type": info.data["type"]},
            )
        return rate

    @model_serializer(mode="wrap")
    def _rate_for_pcm_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        shown: dict[str, Any] = handler(self)
        if self.rate is None:
            del shown["rate"]
        return shown

    def audio_format(self) -> AudioFormat:
        return AudioFormat(_GA_ENCODINGS[self.type], self.rate or _rates(self.type)[0])

    @classmethod
    def of(cls, fmt: AudioFormat) -> "GAAudioFormat":
        if fmt.encoding == "pcm16":  # validated: the config's rate is a plain int
            return cls.model_validate({"type": GA_FORMATS[fmt.encoding], "rate": fmt.rate})
        return cls(type=GA_FORMATS[fmt.encoding])  # G.711's rate is implied


def _rates(ga_type: str) -> tuple[int, ...]:
    return PCM_RATES if ga_type == "audio/pcm" else (G711_RATE,)


class GAAudioInput(_Update):
    format: GAAudioFormat = _absent()
    transcription: TranscriptionSettings = Field(default_factory=TranscriptionSettings)
    turn_detection: TurnDetection | None = _absent("null: turns end with a manual commit.")

    def applied_to(self, config: SessionConfig) -> SessionConfig:
        config = replace(config, transcription=self.transcription.applied_to(config.transcription))
        if "format" in self.model_fields_set:
            config = replace(config, audio_format=self.format.audio_format())
        if "turn_detection" in self.model_fields_set:
            config = replace(config, turn_detection=_detection(self.turn_detection, config.turn_detection))
        return config


def _detection(update: TurnDetection | None, current: StreamParams | None) -> StreamParams | None:
    return None if update is None else update.applied_to(current)


class GAAudio(_Update):
    input: GAAudioInput = Field(default_factory=GAAudioInput)


class GATranscriptionSession(_Update):
    """A GA realtime session (`session.update`'s `session`); only transcription sessions are served."""

    type: Annotated[Literal["transcription"], _only("transcription", "only transcription sessions are served")] = (
        "transcription"
    )
    audio: GAAudio = Field(default_factory=GAAudio)
    assistant: AssistantSettings = Field(default_factory=AssistantSettings)

    def applied_to(self, config: SessionConfig) -> SessionConfig:
        config = self.audio.input.applied_to(config)
        return replace(config, assistant=self.assistant.applied_to(config.assistant))


class BetaTranscriptionSession(_Update):
    """A beta transcription session (`transcription_session.update`'s `session`)."""

    input_audio_format: BetaFormat = _absent("pcm16 is 24 kHz.")
    input_audio_transcription: TranscriptionSettings = Field(default_factory=TranscriptionSettings)
    turn_detection: TurnDetection | None = _absent("null: turns end with a manual commit.")
    assistant: AssistantSettings = Field(default_factory=AssistantSettings)

    def applied_to(self, config: SessionConfig) -> SessionConfig:
        if "input_audio_format" in self.model_fields_set:
            encoding = _BETA_ENCODINGS[self.input_audio_format]
            config = replace(
                config, audio_format=AudioFormat(encoding, PCM_RATES[0] if encoding == "pcm16" else G711_RATE)
            )
        config = replace(config, transcription=self.input_audio_transcription.applied_to(config.transcription))
        if "turn_detection" in self.model_fields_set:
            config = replace(config, turn_detection=_detection(self.turn_detection, config.turn_detection))
        return replace(config, assistant=self.assistant.applied_to(config.assistant))


_Session = TypeVar("_Session", GATranscriptionSession, BetaTranscriptionSession)


def _validated(model: type[_Session], value: Any) -> _Session:
    """`value` (a client's `session`) as `model`; else a 400 naming the first field at fault."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise _api_error(exc) from None


def _api_error(exc: ValidationError) -> APIError:
    first = exc.errors(include_url=False)[0]
    param = ".".join(["session", *map(str, first["loc"])])
    kind = first["type"]
    if kind == "unsupported_language":  # HTTP's rule: HTTP's message, which names `language`
        return APIError(400, first["msg"], param=param, code=kind)
    # A value outside the choices, or a choice left out (a format's `type`), is unsupported.
    code = "unsupported_value" if kind in ("literal_error", "unsupported_value", "missing") else "invalid_value"
    if kind == "model_type":
        message = f"`{param}` must be an object."
    elif kind == "missing":
        message = f"`{param}` is required."
    else:  # pydantic's "Input should be …"
        message = f"`{param}` {first['msg'].removeprefix('Input ')}."
    return APIError(400, message, param=param, code=code)


def parse_ga_session(value: Any, current: SessionConfig) -> SessionConfig:
    """`current` with a GA `session` applied (`session.update`, a GA client secret)."""
    return _validated(GATranscriptionSession, value).applied_to(current)


def parse_beta_session(value: Any, current: SessionConfig) -> SessionConfig:
    """`current` with a beta `session` applied (`transcription_session.update`, a beta client secret)."""
    return _validated(BetaTranscriptionSession, value).applied_to(current)


# What the server shows: `session.created`/`updated`, `transcription_session.created`/`updated`
# and the client-secret routes' answers.


class GAAudioInputShown(BaseModel):
    format: GAAudioFormat
    transcription: TranscriptionSettings
    turn_detection: TurnDetection | None
    noise_reduction: None = None


class GAAudioShown(BaseModel):
    input: GAAudioInputShown


class GASessionShown(BaseModel):
    type: Literal["transcription"] = "transcription"
    id: str
    object: Literal["realtime.transcription_session"] = "realtime.transcription_session"
    expires_at: int
    audio: GAAudioShown
    include: None = None
    assistant: AssistantSettings


class BetaSessionShown(BaseModel):
    id: str
    object: Literal["realtime.transcription_session"] = "realtime.transcription_session"
    expires_at: int
    modalities: list[Literal["text"]] = ["text"]
    input_audio_format: BetaFormat
    input_audio_transcription: TranscriptionSettings
    turn_detection: TurnDetection | None
    input_audio_noise_reduction: None = None
    include: None = None
    assistant: AssistantSettings


def session_object(
    config: SessionConfig, *, beta: bool, session_id: str, expires_at: int, default_model: str | None
) -> dict[str, Any]:
    """The session as the server shows it; `default_model` names the model when the config names none."""
    transcription = TranscriptionSettings.of(config.transcription, default_model)
    turn_detection = TurnDetection.of(config.turn_detection)
    assistant = AssistantSettings.of(config.assistant)
    if beta:
        return BetaSessionShown(
            id=session_id,
            expires_at=expires_at,
            input_audio_format=BETA_FORMATS[config.audio_format.encoding],
            input_audio_transcription=transcription,
            turn_detection=turn_detection,
            assistant=assistant,
        ).model_dump()
    audio_input = GAAudioInputShown(
        format=GAAudioFormat.of(config.audio_format), transcription=transcription, turn_detection=turn_detection
    )
    return GASessionShown(
        id=session_id, expires_at=expires_at, audio=GAAudioShown(input=audio_input), assistant=assistant
    ).model_dump()


def described_as(model: type[BaseModel]) -> WithJsonSchema:
    """A JSON object field that the OpenAPI document shows as `model`."""
    return WithJsonSchema(model_schema(model))


GASessionBody = Annotated[dict[str, Any], described_as(GATranscriptionSession)]


def beta_session_properties(schema: dict[str, Any]) -> None:
    """`json_schema_extra` of a body that carries the beta session fields at its top level."""
    schema.setdefault("properties", {}).update(model_schema(BetaTranscriptionSession)["properties"])
