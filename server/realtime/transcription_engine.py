"""What a realtime session asks of a transcription engine, whichever it is.

The session decides where conversation items begin and end (server VAD's speech start and stop, or
the client's commits) and hands every decoded 16 kHz sample over; the engine turns each item's
audio into transcript events (`TranscriptDelta`, `TranscriptPartial`, then `TranscriptCompleted`
or `TranscriptFailed`), emits them itself, in item order, and reports each committed item's final
event through `on_turn_done` right after emitting it. Engines: `TurnEngine` (each item
transcribed whole after it ends) and `StreamEngine` (each item streamed to vLLM's `/v1/realtime`
as it is heard).
"""

from collections.abc import Callable
from typing import Protocol

import numpy as np

from server.realtime.events import TranscriptCompleted, TranscriptFailed

TurnDone = Callable[[TranscriptCompleted | TranscriptFailed], None]


class TranscriptionEngine(Protocol):
    """Positions are 16 kHz sample counts since the session's first audio."""

    def start_item(self, item_id: str, position: int) -> None:
        """Item `item_id` opens; its audio begins at `position` (prefix padding may put it in the past).

        The session ends or discards the item before; the engines end (`StreamEngine`) or drop
        (`TurnEngine`) one left open, without reporting it.
        """

    def append(self, samples: np.ndarray) -> None:
        """The session's next decoded samples, every one of them, in order."""

    def pause(self, position: int) -> None:
        """The open item's speech has paused: it ends at `position` if the silence lasts. The turn
        engine transcribes it so far at once (an eager final); the streaming engine needs nothing."""

    def resume(self) -> None:
        """Speech went on after `pause`: what was started for that end is dropped."""

    def end_item(self, position: int) -> None:
        """The open item is committed: its audio ends at `position`, and its final event is reported."""

    def discard_item(self) -> None:
        """Drop the open item: no final event comes for it."""

    async def aclose(self) -> None:
        """Stop: the engine's work in flight is cancelled and nothing more is emitted."""
