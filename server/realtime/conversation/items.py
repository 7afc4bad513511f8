"""A conversation's items, independent of the wire protocol: messages (user, assistant, system),
function calls and their outputs, as OpenAI's Realtime protocol defines them.

Items are mutable while they are in progress (a reply's text grows, a turn's transcript arrives);
whoever renders one copies what it shows at that moment. A user turn's audio is kept as 16 kHz
int16 samples (half of float32's memory) for as long as the conversation may send it to the model.
"""

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from server.core.audio import SAMPLE_RATE

Status = Literal["completed", "incomplete", "in_progress"]


@dataclass
class InputText:
    text: str


@dataclass
class InputAudio:
    """A user's audio: `samples` until the conversation lets them go, `transcript` once known."""

    samples: np.ndarray | None
    duration_ms: int
    transcript: str | None = None

    @classmethod
    def of(cls, samples: np.ndarray) -> "InputAudio":
        pcm = np.rint(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        return cls(pcm, len(pcm) * 1000 // SAMPLE_RATE)

    def float_samples(self) -> np.ndarray | None:
        return None if self.samples is None else self.samples.astype(np.float32) / 32767.0


@dataclass
class OutputText:
    text: str = ""


Content = InputText | InputAudio | OutputText


@dataclass
class Message:
    id: str
    role: Literal["user", "assistant", "system"]
    content: list[Content]
    status: Status = "completed"

    def text(self) -> str:
        """Its text parts and transcripts, joined (what a prompt shows of it without audio)."""
        parts = [part.text if not isinstance(part, InputAudio) else (part.transcript or "") for part in self.content]
        return " ".join(part for part in parts if part)


@dataclass
class FunctionCall:
    id: str
    call_id: str
    name: str
    arguments: str = ""
    status: Status = "completed"


@dataclass
class FunctionCallOutput:
    id: str
    call_id: str
    output: str
    status: Status = "completed"


Item = Message | FunctionCall | FunctionCallOutput


def item_bytes(item: Item) -> int:
    """What an item holds in memory, roughly: its text and its audio."""
    if isinstance(item, FunctionCall):
        return len(item.name) + len(item.arguments)
    if isinstance(item, FunctionCallOutput):
        return len(item.call_id) + len(item.output)
    size = 0
    for part in item.content:
        if isinstance(part, InputAudio):
            size += (0 if part.samples is None else part.samples.nbytes) + len(part.transcript or "")
        else:
            size += len(part.text)
    return size


@dataclass
class Usage:
    """A response's token counts, from vLLM's."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class ResponseState:
    """A response as it stands: its output items so far, and once it ends its status and why."""

    id: str
    in_conversation: bool
    metadata: dict[str, str] | None
    max_output_tokens: int | None
    output: list[Item] = field(default_factory=list)
    status: Literal["in_progress", "completed", "cancelled", "failed", "incomplete"] = "in_progress"
    reason: Literal["turn_detected", "client_cancelled", "max_output_tokens"] | None = None
    error: tuple[str, str] | None = None  # (code, message) of a failed one
    usage: Usage = field(default_factory=Usage)
