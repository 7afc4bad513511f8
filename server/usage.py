"""Token usage shared by the vLLM client, transcription and realtime sessions (no dependencies)."""

from dataclasses import dataclass


@dataclass
class StreamUsage:
    """Token counts reported at the end of a streamed transcription or chat completion."""

    input_tokens: int = 0
    output_tokens: int = 0
