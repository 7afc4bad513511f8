"""The events of vLLM's `/v1/realtime` (its `vllm/entrypoints/speech_to_text/realtime/protocol.py`).

Audio is base64 PCM16, 16 kHz mono. One `input_audio_buffer.commit` starts a generation, a commit
with `final: true` ends its audio; vLLM answers with one `transcription.delta` per 80 ms step and a
`transcription.done` with the generation's whole text.
"""

import base64
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, Field, TypeAdapter

# One decoder step (and one output token) per 80 ms of audio.
STEP_SAMPLES = 1280


class SessionUpdate(BaseModel):
    type: Literal["session.update"] = "session.update"
    model: str


class Commit(BaseModel):
    type: Literal["input_audio_buffer.commit"] = "input_audio_buffer.commit"
    final: bool = False


class Append(BaseModel):
    type: Literal["input_audio_buffer.append"] = "input_audio_buffer.append"
    audio: str

    @classmethod
    def from_samples(cls, samples: np.ndarray) -> "Append":
        """From float32 samples in [-1, 1] (or int16 samples, sent as they are)."""
        if samples.dtype != np.int16:
            samples = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        return cls(audio=base64.b64encode(samples.astype("<i2").tobytes()).decode("ascii"))


class SessionCreated(BaseModel):
    type: Literal["session.created"]
    id: str = ""


class Delta(BaseModel):
    type: Literal["transcription.delta"]
    delta: str


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Done(BaseModel):
    type: Literal["transcription.done"]
    text: str
    usage: Usage | None = None


class Error(BaseModel):
    type: Literal["error"]
    error: str
    code: str | None = None


ServerEvent = Annotated[SessionCreated | Delta | Done | Error, Field(discriminator="type")]
server_event: TypeAdapter[SessionCreated | Delta | Done | Error] = TypeAdapter(ServerEvent)
