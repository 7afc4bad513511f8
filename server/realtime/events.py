"""What a session reports, independent of the wire protocol; adapters render these."""

from dataclasses import dataclass

from server.core.usage import StreamUsage
from server.core.words import Word


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


@dataclass(frozen=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True)
class ResponseDelta:
    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True)
class ResponseDone:
    """End of an assistant reply: `completed`, `cancelled` (a new turn began) or `failed`."""

    response_id: str
    item_id: str
    status: str
    text: str
    usage: StreamUsage
    error: str | None = None


Event = (
    SpeechStarted
    | SpeechStopped
    | Committed
    | TranscriptDelta
    | TranscriptPartial
    | TranscriptCompleted
    | TranscriptFailed
    | ResponseCreated
    | ResponseDelta
    | ResponseDone
)
