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

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SerializeAsAny
from pydantic_core import PydanticCustomError

from server.realtime.ids import new_id

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
    transcript: None = None


class UserAudioItem(BaseModel):
    """A committed turn as a conversation item; its transcript comes in the transcription events."""

    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message"] = "message"
    status: Literal["completed"] = "completed"
    role: Literal["user"] = "user"
    content: list[InputAudio] = Field(default_factory=lambda: [InputAudio()])


class ConversationItemCreated(ServerEvent):
    """Beta's announcement of a committed turn."""

    type: Literal["conversation.item.created"] = "conversation.item.created"
    previous_item_id: str | None
    item: UserAudioItem


class ConversationItemAdded(ServerEvent):
    """GA's announcement of a committed turn, followed at once by `conversation.item.done`."""

    type: Literal["conversation.item.added"] = "conversation.item.added"
    previous_item_id: str | None
    item: UserAudioItem


class ConversationItemDone(ServerEvent):
    type: Literal["conversation.item.done"] = "conversation.item.done"
    previous_item_id: str | None
    item: UserAudioItem


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


# Assistant replies (extension: the events are OpenAI's, the feature is this edge's) --------------


class StartedResponse(BaseModel):
    id: str
    object: Literal["realtime.response"] = "realtime.response"
    status: Literal["in_progress"] = "in_progress"
    output: list[Any] = Field(default_factory=list)
    usage: None = None


class ResponseCreated(ServerEvent):
    type: Literal["response.created"] = "response.created"
    response: StartedResponse


class TextDeltaFields(ServerEvent):
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0
    delta: str


class OutputTextDelta(TextDeltaFields):
    """GA."""

    type: Literal["response.output_text.delta"] = "response.output_text.delta"


class TextDelta(TextDeltaFields):
    """Beta."""

    type: Literal["response.text.delta"] = "response.text.delta"


class TextDoneFields(ServerEvent):
    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0
    text: str


class OutputTextDone(TextDoneFields):
    """GA."""

    type: Literal["response.output_text.done"] = "response.output_text.done"


class TextDone(TextDoneFields):
    """Beta."""

    type: Literal["response.text.done"] = "response.text.done"


class ReplyText(BaseModel):
    type: Literal["output_text", "text"] = Field(description="`output_text` in GA, `text` in beta.")
    text: str


class AssistantItem(BaseModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["completed", "incomplete"]
    content: list[ReplyText]


class Cancelled(BaseModel):
    type: Literal["cancelled"] = "cancelled"
    reason: Literal["turn_detected"] = "turn_detected"


class BackendError(BaseModel):
    type: Literal["backend_error"] = "backend_error"
    message: str | None


class Failed(BaseModel):
    type: Literal["failed"] = "failed"
    error: BackendError


class ResponseUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


ResponseStatus = Literal["completed", "cancelled", "failed"]


class FinishedResponse(BaseModel):
    id: str
    object: Literal["realtime.response"] = "realtime.response"
    status: ResponseStatus
    status_details: Cancelled | Failed | None
    output: list[AssistantItem]
    usage: ResponseUsage


class ResponseDone(ServerEvent):
    type: Literal["response.done"] = "response.done"
    response: FinishedResponse


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
