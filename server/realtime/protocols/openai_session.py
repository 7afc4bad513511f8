"""The realtime session in OpenAI's GA and beta shapes: one set of models that validates what
clients send, renders what the server shows, and describes both in the OpenAPI document. GA has
transcription sessions (`type: "transcription"`) and conversation sessions (`type: "realtime"`);
an update without a `type` keeps the session's. Beta has transcription sessions.

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

import jsonschema
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
from server.realtime.config import (
    MAX_REPLY_TOKENS,
    SEMANTIC_SILENCE_MS,
    AudioFormat,
    FunctionTool,
    NamedFunction,
    SessionConfig,
    ToolChoice,
    Transcription,
    TurnOptions,
)
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
_TURN = TurnOptions()


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


def _null_only(why: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if value is not None:
            raise PydanticCustomError("unsupported_value", "Input should be null ({why})", {"why": why})
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
    """`server_vad` or `semantic_vad` turn detection; the whole field null instead: turns end with a
    manual commit. `create_response` and `interrupt_response` matter in conversation sessions."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: Number = Field(default=_VAD.threshold, ge=0, le=1, description="Speech probability that starts a turn.")
    prefix_padding_ms: StrictInt = Field(
        default=_VAD.prefix_padding_ms, ge=0, description="Audio kept before the speech."
    )
    silence_duration_ms: StrictInt = Field(
        default=_VAD.silence_duration_ms, ge=0, description="Silence that ends a turn (`server_vad`)."
    )
    eagerness: Literal["low", "medium", "high", "auto"] = Field(
        default=_TURN.eagerness,
        description="`semantic_vad`: how soon a turn ends (the longest wait: 8, 4 or 2 s; auto is medium).",
    )
    create_response: StrictBool = Field(default=_TURN.create_response, description="A turn's end starts a response.")
    interrupt_response: StrictBool = Field(
        default=_TURN.interrupt_response, description="Speech cancels the response in progress."
    )
    idle_timeout_ms: Annotated[None, _null_only("idle timeouts are not served")] = None

    def applied_to(self, current: StreamParams | None, turn: TurnOptions) -> tuple[StreamParams, TurnOptions]:
        """`current` None (manual commits): the fields not sent take their defaults."""
        sent = self._sent("idle_timeout_ms")
        turn = replace(
            turn,
            **{
                name: sent.pop(name)
                for name in ("type", "eagerness", "create_response", "interrupt_response")
                if name in sent
            },
        )
        params = replace(current or StreamParams(), **sent)
        if turn.type == "semantic_vad":
            # Without a turn model the session keeps this silence (see `semantic_turns`).
            params = replace(params, silence_duration_ms=SEMANTIC_SILENCE_MS[turn.eagerness])
        return params, turn

    @classmethod
    def of(cls, params: StreamParams | None, turn: TurnOptions) -> "TurnDetection | None":
        if params is None:
            return None
        return cls(
            type=turn.type,
            threshold=params.threshold,
            prefix_padding_ms=params.prefix_padding_ms,
            silence_duration_ms=params.silence_duration_ms,
            eagerness=turn.eagerness,
            create_response=turn.create_response,
            interrupt_response=turn.interrupt_response,
        )

    @model_serializer(mode="wrap")
    def _fields_of_its_type(self, handler: SerializerFunctionWrapHandler, info: Any) -> dict[str, Any]:
        shown: dict[str, Any] = handler(self)
        for name in (
            ("threshold", "prefix_padding_ms", "silence_duration_ms") if self.type == "semantic_vad" else ("eagerness",)
        ):
            shown.pop(name, None)
        if not (info.context or {}).get("conversation"):
            for name in ("create_response", "interrupt_response", "idle_timeout_ms"):
                shown.pop(name, None)
        return shown


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
        return _format_and_turns(self, config)


def _format_and_turns(update: "GAAudioInput | GAConversationAudioInput", config: SessionConfig) -> SessionConfig:
    if "format" in update.model_fields_set:
        config = replace(config, audio_format=update.format.audio_format())
    return _turns(update, config)


def _turns(
    update: "GAAudioInput | GAConversationAudioInput | BetaTranscriptionSession", config: SessionConfig
) -> SessionConfig:
    if "turn_detection" not in update.model_fields_set:
        return config
    if update.turn_detection is None:
        return replace(config, turn_detection=None)
    params, turn = update.turn_detection.applied_to(config.turn_detection, config.turn)
    return replace(config, turn_detection=params, turn=turn)


class GAAudio(_Update):
    input: GAAudioInput = Field(default_factory=GAAudioInput)


class GATranscriptionSession(_Update):
    """A GA transcription session (`session.update`'s `session` with `type: "transcription"`)."""

    type: Literal["transcription"] = "transcription"
    audio: GAAudio = Field(default_factory=GAAudio)

    def applied_to(self, config: SessionConfig) -> SessionConfig:
        config = replace(config, kind="transcription", transcription=replace(config.transcription, events=True))
        return self.audio.input.applied_to(config)


class BetaTranscriptionSession(_Update):
    """A beta transcription session (`transcription_session.update`'s `session`)."""

    input_audio_format: BetaFormat = _absent("pcm16 is 24 kHz.")
    input_audio_transcription: TranscriptionSettings = Field(default_factory=TranscriptionSettings)
    turn_detection: TurnDetection | None = _absent("null: turns end with a manual commit.")

    def applied_to(self, config: SessionConfig) -> SessionConfig:
        if "input_audio_format" in self.model_fields_set:
            encoding = _BETA_ENCODINGS[self.input_audio_format]
            config = replace(
                config, audio_format=AudioFormat(encoding, PCM_RATES[0] if encoding == "pcm16" else G711_RATE)
            )
        config = replace(config, transcription=self.input_audio_transcription.applied_to(config.transcription))
        return _turns(self, config)


# Conversation sessions ------------------------------------------------------------------------


def _json_schema(value: Any) -> Any:
    """A function's `parameters`: a JSON Schema of an object."""
    if not isinstance(value, dict):
        raise PydanticCustomError("invalid_value", "Input should be a JSON Schema object")
    try:
        jsonschema.validators.validator_for(value).check_schema(value)
    except jsonschema.SchemaError as exc:
        raise PydanticCustomError(
            "invalid_value", "Input should be a valid JSON Schema ({problem})", {"problem": exc.message}
        ) from None
    if value.get("type", "object") != "object":
        raise PydanticCustomError("invalid_value", 'Input should be the schema of an object (`type: "object"`)')
    return value


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Annotated[Literal["function"], _only("function", "only function tools are served; no MCP tools")] = "function"
    name: Annotated[StrictStr, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: Text = None
    parameters: Annotated[dict[str, Any], BeforeValidator(_json_schema)] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    def tool(self) -> FunctionTool:
        return FunctionTool(self.name, self.description, self.parameters)

    @classmethod
    def of(cls, tool: FunctionTool) -> "Tool":
        return cls(name=tool.name, description=tool.description, parameters=tool.parameters)


class FunctionChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Annotated[Literal["function"], _only("function", "only function tools are served; no MCP tools")]
    name: StrictStr


ToolChoiceField = Literal["auto", "none", "required"] | FunctionChoice
MaxOutputTokens = Annotated[StrictInt, Field(ge=1, le=MAX_REPLY_TOKENS)] | Literal["inf"]


def tool_choice_of(choice: ToolChoiceField) -> ToolChoice:
    return NamedFunction(choice.name) if isinstance(choice, FunctionChoice) else choice


def shown_tool_choice(choice: ToolChoice) -> ToolChoiceField:
    return FunctionChoice(type="function", name=choice.name) if isinstance(choice, NamedFunction) else choice


def max_tokens_of(value: int | str | None) -> int | None:
    return value if isinstance(value, int) else None


class GAConversationAudioInput(_Update):
    format: GAAudioFormat = _absent()
    transcription: TranscriptionSettings | None = _absent("null: no transcription events (turns are heard as audio).")
    turn_detection: TurnDetection | None = _absent("null: turns end with a manual commit.")

    def applied_to(self, config: SessionConfig) -> SessionConfig:
        if "transcription" in self.model_fields_set:
            if self.transcription is None:
                config = replace(config, transcription=replace(config.transcription, events=False))
            else:
                transcription = self.transcription.applied_to(replace(config.transcription, events=True))
                config = replace(config, transcription=transcription)
        return _format_and_turns(self, config)


class GAConversationAudio(_Update):
    input: GAConversationAudioInput = Field(default_factory=GAConversationAudioInput)
    output: dict[str, Any] | None = _absent("Accepted and shown back: replies are text (no voice, format or speed).")


class GAConversationSession(_Update):
    """A GA conversation session (`session.update`'s `session` with `type: "realtime"`)."""

    type: Literal["realtime"] = "realtime"
    model: Text = Field(default=None, description="The served model or an alias; absent or null: the served model.")
    instructions: Annotated[StrictStr | None, AfterValidator(_none_if_empty)] = None
    output_modalities: list[Literal["text", "audio"]] = Field(
        default_factory=lambda: ["text"],  # type: ignore[arg-type]  # a list of the literal
        description='`["text"]`. Audio output is not served: asking for it gets an `error` event and text.',
    )
    audio: GAConversationAudio = Field(default_factory=GAConversationAudio)
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoiceField = "auto"
    max_output_tokens: MaxOutputTokens = "inf"
    tracing: Any = None
    truncation: Any = "auto"
    prompt: Annotated[Any, _null_only("stored prompts are OpenAI's")] = None
    temperature: Number | None = Field(default=None, ge=0, le=2, description="Beta's; accepted and ignored.")

    def applied_to(self, config: SessionConfig) -> SessionConfig:
        sent = self.model_fields_set
        conversation = config.conversation
        changes: dict[str, Any] = {}
        for name in ("model", "instructions", "tracing", "truncation"):
            if name in sent:
                changes[name] = getattr(self, name)
        if "tools" in sent:
            changes["tools"] = tuple(tool.tool() for tool in self.tools)
        if "tool_choice" in sent:
            changes["tool_choice"] = tool_choice_of(self.tool_choice)
        if "max_output_tokens" in sent:
            changes["max_output_tokens"] = max_tokens_of(self.max_output_tokens)
        if "output" in self.audio.model_fields_set:
            changes["output"] = self.audio.output
        config = replace(config, kind="realtime", conversation=replace(conversation, **changes))
        return self.audio.input.applied_to(config)

    def refusals(self) -> list[APIError]:
        """What was asked for and is not served, though the rest of the update applies."""
        return [audio_output_refused("session.output_modalities")] if "audio" in self.output_modalities else []


def audio_output_refused(param: str) -> APIError:
    """The error for asking audio output of a session or a response: the text goes on."""
    return APIError(
        400,
        "Audio output is not served: this server has no speech synthesis, so replies are text "
        '(`output_modalities` is `["text"]`).',
        param=param,
        code="unsupported_value",
    )


_Session = TypeVar("_Session", GATranscriptionSession, GAConversationSession, BetaTranscriptionSession)


def _validated(model: type[_Session], value: Any) -> _Session:
    """`value` (a client's `session`) as `model`; else a 400 naming the first field at fault."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise _api_error(exc) from None


def _api_error(exc: ValidationError) -> APIError:
    first = exc.errors(include_url=False)[0]
    # A union's branch names (`constrained-int`, `literal['inf']`) are not fields: left out.
    fields = [str(part) for part in first["loc"] if not any(c in str(part) for c in "-[(")]
    param = ".".join(["session", *fields])
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


def ga_update(value: Any, current: SessionConfig) -> tuple[SessionConfig, list[APIError]]:
    """`current` with a GA `session` applied, and what it asked for that is refused though the
    rest applies (audio output). The session's `type` picks the model; absent, the current one."""
    kind = value.get("type", current.kind) if isinstance(value, dict) else current.kind
    if kind == "realtime":
        conversation = _validated(GAConversationSession, value)
        return conversation.applied_to(current), conversation.refusals()
    if kind == "transcription":
        return _validated(GATranscriptionSession, value).applied_to(current), []
    raise APIError(
        400,
        "`session.type` should be 'transcription' or 'realtime'.",
        param="session.type",
        code="unsupported_value",
    )


def parse_ga_session(value: Any, current: SessionConfig) -> SessionConfig:
    """`current` with a GA `session` applied (`session.update`, a GA client secret)."""
    return ga_update(value, current)[0]


def parse_beta_session(value: Any, current: SessionConfig) -> SessionConfig:
    """`current` with a beta `session` applied (`transcription_session.update`, a beta client secret)."""
    return _validated(BetaTranscriptionSession, value).applied_to(current)


# What the server shows: `session.created`/`updated`, `transcription_session.created`/`updated`
# and the client-secret routes' answers.


class GAAudioInputShown(BaseModel):
    format: GAAudioFormat
    transcription: TranscriptionSettings | None
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


class GAConversationAudioShown(BaseModel):
    input: GAAudioInputShown
    output: dict[str, Any] | None


class GAConversationSessionShown(BaseModel):
    type: Literal["realtime"] = "realtime"
    id: str
    object: Literal["realtime.session"] = "realtime.session"
    expires_at: int
    model: str | None
    output_modalities: list[Literal["text"]] = ["text"]
    instructions: str | None
    audio: GAConversationAudioShown
    tools: list[Tool]
    tool_choice: ToolChoiceField
    max_output_tokens: MaxOutputTokens
    tracing: Any
    truncation: Any
    prompt: None = None
    include: None = None


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


def session_object(
    config: SessionConfig, *, beta: bool, session_id: str, expires_at: int, default_model: str | None
) -> dict[str, Any]:
    """The session as the server shows it; `default_model` names the model when the config names none."""
    transcription = TranscriptionSettings.of(config.transcription, default_model)
    turn_detection = TurnDetection.of(config.turn_detection, config.turn)
    if beta:
        return BetaSessionShown(
            id=session_id,
            expires_at=expires_at,
            input_audio_format=BETA_FORMATS[config.audio_format.encoding],
            input_audio_transcription=transcription,
            turn_detection=turn_detection,
        ).model_dump()
    conversation = config.kind == "realtime"
    audio_input = GAAudioInputShown(
        format=GAAudioFormat.of(config.audio_format),
        transcription=transcription if config.transcription.events else None,
        turn_detection=turn_detection,
    )
    if not conversation:
        return GASessionShown(id=session_id, expires_at=expires_at, audio=GAAudioShown(input=audio_input)).model_dump()
    settings = config.conversation
    return GAConversationSessionShown(
        id=session_id,
        expires_at=expires_at,
        model=settings.model or default_model,
        instructions=settings.instructions,
        audio=GAConversationAudioShown(input=audio_input, output=settings.output),
        tools=[Tool.of(tool) for tool in settings.tools],
        tool_choice=shown_tool_choice(settings.tool_choice),
        max_output_tokens=settings.max_output_tokens or "inf",
        tracing=settings.tracing,
        truncation=settings.truncation,
    ).model_dump(context={"conversation": True})


def described_as(model: type[BaseModel]) -> WithJsonSchema:
    """A JSON object field that the OpenAPI document shows as `model`."""
    return WithJsonSchema(model_schema(model))


GASessionBody = Annotated[
    dict[str, Any],
    WithJsonSchema({"anyOf": [model_schema(GATranscriptionSession), model_schema(GAConversationSession)]}),
]


def beta_session_properties(schema: dict[str, Any]) -> None:
    """`json_schema_extra` of a body that carries the beta session fields at its top level."""
    schema.setdefault("properties", {}).update(model_schema(BetaTranscriptionSession)["properties"])
