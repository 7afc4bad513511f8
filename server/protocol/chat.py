"""OpenAI's chat completion request (`POST /v1/chat/completions`), as far as the edge reads it.

The body goes on to vLLM, which validates the rest; the model documents and checks the fields
the edge itself uses, and keeps every other field as it came (`extra="allow"`).
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="The served model or one of its aliases; absent: the served model.")
    messages: list[dict[str, Any]] = Field(
        min_length=1,
        description="OpenAI's messages. `audio_url` content parts are fetched by the edge and sent to vLLM as "
        "`input_audio`; `input_audio` parts are decoded and re-encoded as 16 kHz WAV.",
    )
    stream: bool = Field(False, description="Relay vLLM's server-sent events chunk by chunk.")
