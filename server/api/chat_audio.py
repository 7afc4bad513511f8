"""Chat requests' audio: fetched (for `audio_url`) and normalized by the edge, not by vLLM.

vLLM would fetch an `audio_url` itself, from wherever it points. The edge fetches http(s) and
`data:` audio URLs with its safe fetcher instead and hands vLLM the decoded audio as
`input_audio` (16 kHz WAV), so vLLM never reaches out to arbitrary addresses; inline
`input_audio` is decoded and re-encoded the same way. The HTTP chat route
and the RunPod worker both prepare chat bodies here.
"""

import asyncio
import base64
from typing import Any, BinaryIO

import numpy as np
from pydantic import ValidationError

from server.backend.model_names import ModelNames
from server.core.audio import decode_audio, encode_wav
from server.core.errors import InputError, bad_request, validation_error
from server.files.fetch import SafeFetcher
from server.protocol.chat import ChatCompletionRequest


async def _decoded(part: dict[str, Any], fetcher: SafeFetcher, max_audio_s: float) -> np.ndarray:
    if part.get("type") == "audio_url":
        ref = part.get("audio_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        if not isinstance(url, str) or not url:
            raise bad_request("An `audio_url` content part needs a `url`.", param="messages")
        source: BinaryIO | bytes = (await fetcher.fetch(url)).file
    else:
        ref = part.get("input_audio")
        data = ref.get("data") if isinstance(ref, dict) else None
        if not isinstance(data, str) or not data:
            raise bad_request("An `input_audio` content part needs base64 `data`.", param="messages")
        try:
            source = base64.b64decode(data, validate=True)
        except ValueError:
            raise bad_request("`input_audio.data` is not valid base64.", param="messages") from None
    try:
        return await asyncio.to_thread(decode_audio, source, max_duration_s=max_audio_s)
    finally:
        if not isinstance(source, bytes):
            source.close()


async def normalized_audio(part: dict[str, Any], fetcher: SafeFetcher, max_audio_s: float) -> dict[str, Any]:
    """An `audio_url` or `input_audio` content part as an `input_audio` part holding 16 kHz mono WAV.

    URLs are fetched by the safe fetcher; inline audio is decoded too, so every format the edge
    reads works (vLLM's own decoder refuses some, such as stereo MP3) and the same limits apply.
    """
    try:
        audio = await _decoded(part, fetcher, max_audio_s)
    except InputError as exc:
        raise exc.api_error("messages") from None
    wav = base64.b64encode(encode_wav(audio)).decode()
    return {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}


def parse_chat(fields: dict[str, Any]) -> dict[str, Any]:
    """A chat body checked against `ChatCompletionRequest` (400 naming the field), every field kept."""
    try:
        return ChatCompletionRequest.model_validate(fields).model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def prepare_chat(body: dict[str, Any], *, models: ModelNames, fetcher: SafeFetcher, max_audio_s: float) -> int:
    """Resolve the model name and normalize every audio part of a parsed body, in place; return how many."""
    body["model"] = await models.resolve(body.get("model"))
    audios = 0
    for message in body["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for i, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in ("audio_url", "input_audio"):
                content[i] = await normalized_audio(part, fetcher, max_audio_s)
                audios += 1
    return audios
