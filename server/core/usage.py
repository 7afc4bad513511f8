"""Token usage shared by the vLLM client, transcription and realtime sessions (no dependencies)."""

from dataclasses import dataclass
from typing import Any


@dataclass
class StreamUsage:
    """Token counts reported at the end of a streamed transcription or chat completion."""

    input_tokens: int = 0
    output_tokens: int = 0

    def openai_usage(self) -> dict[str, Any]:
        """OpenAI's token usage object (`{"type": "tokens", ...}`) of a transcription."""
        return {
            "type": "tokens",
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
