"""The OpenAI Realtime protocol's events on this edge: the client events it takes and the server
events it sends, GA and beta flavours, as pydantic models.

The server events follow the `openai` SDK's types (`openai.types.realtime` for GA,
`openai.types.beta.realtime` for beta); the test suite validates every event it receives against
them, since clients such as the OpenAI Agents SDK silently drop an event that does not validate.
Fields and events marked "extension" are this edge's own. `sent` is the one place a server event
becomes the JSON-ready message that goes on the wire.

A client event's validators raise `PydanticCustomError`s whose type is the error code and whose
message is the one the client reads (see `server.realtime.protocols.openai.client_event`).
"""

import base64
import binascii
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SerializeAsAny, StrictInt, StrictStr, model_validator
from pydantic_core import PydanticCustomError

from server.realtime.ids import new_id
from server.realtime.protocols.openai_session import MaxOutputTokens, Tool, ToolChoiceField

Message = dict[str, Any]
Flavour = Literal["ga", "beta"]
SessionObject = dict[str, Any] | SerializeAsAny[BaseModel]
"""A session as `OpenAIProtocol.session_object` shows it (its shape is defined there)."""


def _omitted_when_none(value: object) -> bool:
    return value is None


def optional_extension(description: str) -> Any:
    """An extension field left out of the message when it has no value (rather than sent as null),
    so clients that do not know it see OpenAI's shape."""
    return Field(None, description=description, exclude_if=_omitted_when_none)


# Client events ---------------------------------------------------------------------------------


class ClientEvent(BaseModel):
    """A client event; fields this edge does not use (its `event_id`, OpenAI's others) are ignored."""

    model_config = ConfigDict(extra="ignore")
    type: str


def _base64_audio(value: object) -> bytes:
    if not isinstance(value, str):
        raise PydanticCustomError("invalid_value", "`audio` must be a base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PydanticCustomError("invalid_value", "`audio` is not valid base64.") from None


class InputAudioBufferAppend(ClientEvent):
    type: Literal["input_audio_buffer.append"]
    # Not required: a missing `audio` answers the same error as one of the wrong type.
    audio: Annotated[bytes, PlainValidator(_base64_audio)] = Field(None, validate_default=True)


class InputAudioBufferCommit(ClientEvent):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(ClientEvent):
    type: Literal["input_audio_buffer.clear"]


# Conversation items as clients send them (`conversation.item.create`, `response.create`'s `input`).


class InputTextPart(BaseModel):
    type: Literal["input_text"]
    text: StrictStr


class InputAudioPart(BaseModel):
    """Audio in the session's input format, base64."""

    type: Literal["input_audio"]
    audio: Annotated[bytes, PlainValidator(_base64_audio)]
    transcript: StrictStr | None = None


class OutputTextPart(BaseModel):
    type: Literal["output_text", "text"]
    text: StrictStr


class _ItemIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None


class MessageIn(_ItemIn):
    type: Literal["message"]
    role: Literal["user", "assistant", "system"]
    content: list[Annotated[InputTextPart | InputAudioPart | OutputTextPart, Field(discriminator="type")]] = Field(
        min_length=1
    )

    @model_validator(mode="after")
    def _parts_of_its_role(self) -> "MessageIn":
        allowed = {
            "user": ("input_text", "input_audio"),
            "assistant": ("output_text", "text"),
            "system": ("input_text",),
        }
        for index, part in enumerate(self.content):
            if part.type not in allowed[self.role]:
                raise PydanticCustomError(
                    "invalid_value",
                    "`item.content.{index}.type` {kind} is not a part of a {role} message (allowed: {allowed}).",
                    {"index": index, "kind": part.type, "role": self.role, "allowed": ", ".join(allowed[self.role])},
                )
        return self


class FunctionCallIn(_ItemIn):
    type: Literal["function_call"]
    call_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    name: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    arguments: StrictStr = "{}"


class FunctionCallOutputIn(_ItemIn):
    type: Literal["function_call_output"]
    call_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    output: StrictStr


class ItemReferenceIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["item_reference"]
    id: StrictStr


ItemIn = Annotated[MessageIn | FunctionCallIn | FunctionCallOutputIn, Field(discriminator="type")]


class ConversationItemCreate(ClientEvent):
    type: Literal["conversation.item.create"]
    previous_item_id: StrictStr | None = None
    item: ItemIn


class ConversationItemRetrieve(ClientEvent):
    type: Literal["conversation.item.retrieve"]
    item_id: StrictStr


class ConversationItemDelete(ClientEvent):
    type: Literal["conversation.item.delete"]
    item_id: StrictStr


class ConversationItemTruncate(ClientEvent):
    type: Literal["conversation.item.truncate"]
    item_id: StrictStr
    content_index: Annotated[StrictInt, Field(ge=0)]
    audio_end_ms: Annotated[StrictInt, Field(ge=0)]


class ResponseParams(BaseModel):
    """`response.create`'s `response`; the session's settings for what it leaves out."""

    model_config = ConfigDict(extra="ignore")
    instructions: StrictStr | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoiceField | None = None
    max_output_tokens: MaxOutputTokens | None = None
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[StrictStr, Field(max_length=512)]] | None = Field(
        default=None, max_length=16
    )
    conversation: Literal["auto", "none"] = "auto"
    input: (
        list[
            Annotated[MessageIn | FunctionCallIn | FunctionCallOutputIn | ItemReferenceIn, Field(discriminator="type")]
        ]
        | None
    ) = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    audio: Any = None


class ResponseCreate(ClientEvent):
    type: Literal["response.create"]
    response: ResponseParams = ResponseParams()


class ResponseCancel(ClientEvent):
    type: Literal["response.cancel"]
    response_id: StrictStr | None = None


class OutputAudioBufferClear(ClientEvent):
    type: Literal["output_audio_buffer.clear"]


class SessionUpdate(ClientEvent):
    """`session.update` (GA) or `transcription_session.update` (beta); the session is checked by
    the protocol's session parser, which answers its own errors."""

    type: Literal["session.update", "transcription_session.update"]
    session: Any = None


# Server events ---------------------------------------------------------------------------------


class ServerEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    event_id: str = Field(default_factory=lambda: new_id("event"))


class SessionCreated(ServerEvent):
    type: Literal["session.created"] = "session.created"
    session: SessionObject


class SessionUpdated(ServerEvent):
    type: Literal["session.updated"] = "session.updated"
    session: SessionObject


class TranscriptionSessionCreated(ServerEvent):
    """Beta. OpenAI's beta sends it, but the SDK's beta server-event union does not list it."""

    type: Literal["transcription_session.created"] = "transcription_session.created"
    session: SessionObject


class TranscriptionSessionUpdated(ServerEvent):
    """Beta."""

    type: Literal["transcription_session.updated"] = "transcription_session.updated"
    session: SessionObject


class ErrorDetail(BaseModel):
    type: str
    code: str | None
    message: str
    param: str | None
    event_id: str | None = Field(description="The client event's `event_id` this error answers.")


class ErrorEvent(ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail


class SpeechStarted(ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    item_id: str
    audio_start_ms: int


class SpeechStopped(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    item_id: str
    audio_end_ms: int


class Committed(ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None


class Cleared(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class InputAudio(BaseModel):
    type: Literal["input_audio"] = "input_audio"
    transcript: str | None = None


class ConversationItemCreated(ServerEvent):
    """Beta's announcement of a committed turn."""

    type: Literal["conversation.item.created"] = "conversation.item.created"
    previous_item_id: str | None
    item: "ItemShown"


class ConversationItemAdded(ServerEvent):
    """GA's announcement of an item, followed by `conversation.item.done` once it is complete."""

    type: Literal["conversation.item.added"] = "conversation.item.added"
    previous_item_id: str | None
    item: "ItemShown"


class ConversationItemDone(ServerEvent):
    type: Literal["conversation.item.done"] = "conversation.item.done"
    previous_item_id: str | None
    item: "ItemShown"


class TranscriptionEvent(ServerEvent):
    item_id: str
    content_index: int = 0


class TranscriptionDelta(TranscriptionEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    delta: str
    audio_end_ms: int | None = optional_extension(
        "Extension (streaming engine): the text so far stands for the audio up to here."
    )


class TranscriptionPartial(TranscriptionEvent):
    """Extension: provisional text of the turn in progress; supersedes earlier partials."""

    type: Literal["conversation.item.input_audio_transcription.partial"] = (
        "conversation.item.input_audio_transcription.partial"
    )
    transcript: str


class InputTokenDetails(BaseModel):
    text_tokens: int
    audio_tokens: int


class TranscriptionUsage(BaseModel):
    type: Literal["tokens"] = "tokens"
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_token_details: InputTokenDetails


class Word(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionCompleted(TranscriptionEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    transcript: str
    usage: TranscriptionUsage
    words: list[Word] | None = optional_extension(
        "Extension (streaming engine): the words' times, in seconds since the session's start."
    )


class TranscriptionError(BaseModel):
    type: Literal["transcription_error"] = "transcription_error"
    code: str
    message: str
    param: None = None


class TranscriptionFailed(TranscriptionEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    error: TranscriptionError


# Conversation sessions ------------------------------------------------------------------------


class InputTextShown(BaseModel):
    type: Literal["input_text"] = "input_text"
    text: str


class ReplyText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str


ItemStatus = Literal["completed", "incomplete", "in_progress"]


class MessageShown(BaseModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message"] = "message"
    status: ItemStatus
    role: Literal["user", "assistant", "system"]
    content: list[InputAudio | InputTextShown | ReplyText]


class FunctionCallShown(BaseModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["function_call"] = "function_call"
    status: ItemStatus
    call_id: str
    name: str
    arguments: str


class FunctionCallOutputShown(BaseModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["function_call_output"] = "function_call_output"
    status: ItemStatus
    call_id: str
    output: str


ItemShown = MessageShown | FunctionCallShown | FunctionCallOutputShown
for _announcement in (ConversationItemCreated, ConversationItemAdded, ConversationItemDone):
    _announcement.model_rebuild()


class ConversationItemRetrieved(ServerEvent):
    type: Literal["conversation.item.retrieved"] = "conversation.item.retrieved"
    item: ItemShown


class ConversationItemDeleted(ServerEvent):
    type: Literal["conversation.item.deleted"] = "conversation.item.deleted"
    item_id: str


class ConversationItemTruncated(ServerEvent):
    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


class StatusError(BaseModel):
    type: Literal["server_error", "invalid_request_error"]
    code: str | None
    message: str | None


class StatusDetails(BaseModel):
    type: Literal["cancelled", "incomplete", "failed"]
    reason: Literal["turn_detected", "client_cancelled", "max_output_tokens"] | None = None
    error: StatusError | None = None


class InputTokenCounts(BaseModel):
    text_tokens: int
    audio_tokens: int


class ResponseUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    output_token_details: dict[str, int]


ResponseStatus = Literal["in_progress", "completed", "cancelled", "failed", "incomplete"]


class ResponseShown(BaseModel):
    id: str
    object: Literal["realtime.response"] = "realtime.response"
    status: ResponseStatus
    status_details: StatusDetails | None
    output: list[ItemShown]
    usage: ResponseUsage | None
    metadata: dict[str, str] | None
    conversation_id: None = None
    output_modalities: list[Literal["text"]] = ["text"]
    max_output_tokens: MaxOutputTokens


class ResponseCreated(ServerEvent):
    type: Literal["response.created"] = "response.created"
    response: ResponseShown


class ResponseDone(ServerEvent):
    type: Literal["response.done"] = "response.done"
    response: ResponseShown


class OutputItemEvent(ServerEvent):
    response_id: str
    output_index: int
    item: ItemShown


class ResponseOutputItemAdded(OutputItemEvent):
    type: Literal["response.output_item.added"] = "response.output_item.added"


class ResponseOutputItemDone(OutputItemEvent):
    type: Literal["response.output_item.done"] = "response.output_item.done"


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ContentPartEvent(ServerEvent):
    response_id: str
    item_id: str
    output_index: int
    content_index: int = 0
    part: TextPart


class ResponseContentPartAdded(ContentPartEvent):
    type: Literal["response.content_part.added"] = "response.content_part.added"


class ResponseContentPartDone(ContentPartEvent):
    type: Literal["response.content_part.done"] = "response.content_part.done"


class OutputTextDelta(ServerEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    response_id: str
    item_id: str
    output_index: int
    content_index: int = 0
    delta: str


class OutputTextDone(ServerEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    response_id: str
    item_id: str
    output_index: int
    content_index: int = 0
    text: str


class FunctionCallArgumentsDelta(ServerEvent):
    type: Literal["response.function_call_arguments.delta"] = "response.function_call_arguments.delta"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


class FunctionCallArgumentsDone(ServerEvent):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


# The seam --------------------------------------------------------------------------------------

Observer = Callable[[Message, Flavour | None], None]
observers: list[Observer] = []
"""Called with every message `sent` builds and the session's flavour (None for an `error`, which
is the same in both). Empty in production; the test suite's check of every event against the
`openai` SDK's types (tests/event_validation.py) registers here."""


def sent(event: ServerEvent, flavour: Flavour | None) -> Message:
    """The JSON-ready message for `event`, as it goes on the wire."""
    message = event.model_dump(mode="json")
    for observe in observers:
        observe(message, flavour)
    return message
