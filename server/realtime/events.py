"""What a session reports, independent of the wire protocol; adapters render these."""

from dataclasses import dataclass

from server.core.usage import StreamUsage
from server.core.words import Word
from server.realtime.conversation.items import FunctionCall, Item, ResponseState


@dataclass(frozen=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True)
class Committed:
    """A turn's audio became a conversation item."""

    item_id: str
    previous_item_id: str | None


@dataclass(frozen=True)
class TranscriptDelta:
    item_id: str
    delta: str
    audio_end_ms: int | None = None  # streaming engine only: the text stands for the audio up to here


@dataclass(frozen=True)
class TranscriptPartial:
    """Provisional text of the turn in progress (extension); supersedes earlier partials."""

    item_id: str
    transcript: str


@dataclass(frozen=True)
class TranscriptCompleted:
    item_id: str
    transcript: str
    usage: StreamUsage
    audio_start_ms: int
    audio_end_ms: int
    words: tuple[Word, ...] | None = None  # streaming engine only: times in seconds since the session's start


@dataclass(frozen=True)
class TranscriptFailed:
    item_id: str
    code: str
    message: str


# Conversation sessions. The items and the response state are live objects: a renderer shows them
# as they are when the event is emitted.


@dataclass(frozen=True)
class ItemAdded:
    """A client's item joined the conversation after `previous_item_id`."""

    item: Item
    previous_item_id: str | None


@dataclass(frozen=True)
class ItemDeleted:
    item_id: str


@dataclass(frozen=True)
class ResponseStarted:
    response: ResponseState


@dataclass(frozen=True)
class OutputItemStarted:
    """`previous_item_id`: where it joined the conversation (a response outside it: None)."""

    response: ResponseState
    item: Item
    output_index: int
    previous_item_id: str | None


@dataclass(frozen=True)
class OutputTextDelta:
    response_id: str
    item_id: str
    output_index: int
    delta: str


@dataclass(frozen=True)
class FunctionArgumentsDelta:
    response_id: str
    call: FunctionCall
    output_index: int
    delta: str


@dataclass(frozen=True)
class OutputItemFinished:
    response: ResponseState
    item: Item
    output_index: int


@dataclass(frozen=True)
class ResponseFinished:
    response: ResponseState


Event = (
    SpeechStarted
    | SpeechStopped
    | Committed
    | TranscriptDelta
    | TranscriptPartial
    | TranscriptCompleted
    | TranscriptFailed
    | ItemAdded
    | ItemDeleted
    | ResponseStarted
    | OutputItemStarted
    | OutputTextDelta
    | FunctionArgumentsDelta
    | OutputItemFinished
    | ResponseFinished
)
