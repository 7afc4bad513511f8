"""Validate an OpenAI transcription/translation request's fields into what the flow needs.

The fields come from a multipart form or a JSON object (`server.protocol.request_body`), or from a RunPod
job. `server.protocol.audio` checks their types and ranges; the rules between fields (one audio
source, streaming formats, word timestamps) are checked here. Every invalid value is a 400
naming the field.
"""

from dataclasses import dataclass
from typing import Any, BinaryIO

from pydantic import ValidationError
from starlette.datastructures import UploadFile

from server.core.errors import InputError, bad_request, validation_error
from server.core.languages import language_code
from server.files.transcription import ServerVadChunking, TranscriptionOptions
from server.protocol.audio import AudioRequestForm, ServerVadStrategy


@dataclass
class AudioRequest:
    source: BinaryIO | str
    # The request field the audio came from, named in errors about the audio (`file`, `url`, `audio`).
    source_param: str
    model: str | None
    language: str | None
    temperature: float
    response_format: str
    stream: bool
    chunking: ServerVadChunking | None
    # Word timestamps asked for: only a realtime model gives them (see `TranscriptionFlow`).
    words: bool = False

    @property
    def need_segments(self) -> bool:
        return self.response_format in ("verbose_json", "srt", "vtt")

    def options(self, task: str, served_model: str) -> TranscriptionOptions:
        """What the transcription service needs to know, with the model already resolved."""
        return TranscriptionOptions(
            task=task,
            model=served_model,
            language=self.language,
            temperature=self.temperature,
            need_segments=self.need_segments,
            chunking=self.chunking,
        )


def parse_language(value: str | None) -> str | None:
    """An ISO-639-1 code, lower-cased; anything else is a 400."""
    try:
        return language_code(value)
    except InputError as exc:
        raise exc.api_error("language") from None


def _chunking(strategy: ServerVadStrategy | None) -> ServerVadChunking | None:
    if strategy is None:
        return None
    return ServerVadChunking(
        threshold=strategy.threshold,
        prefix_padding_ms=strategy.prefix_padding_ms,
        silence_duration_ms=strategy.silence_duration_ms,
    )


def parse_audio_request(fields: dict[str, Any], *, task: str, url_param: str = "url") -> AudioRequest:
    """Validate `fields`; `url_param` is the field errors about a `url` source should name."""
    upload = fields.get("file")
    if upload is not None and not isinstance(upload, UploadFile):
        raise bad_request("`file` must be an uploaded file (in JSON, send `url`).", param="file")
    try:
        body = AudioRequestForm.model_validate(fields)
    except ValidationError as exc:
        raise validation_error(exc) from None

    url = (body.url or "").strip()
    if body.file is not None and url:
        raise bad_request("Send either `file` or `url`, not both.", param="url")
    source: BinaryIO | str
    if body.file is not None:
        source, source_param = body.file.file, "file"
    elif url:
        source, source_param = url, url_param
    else:
        raise bad_request("No audio: send a `file` upload or a `url`.", param="file", code="missing_audio")

    if body.stream and body.response_format not in ("json", "text"):
        raise bad_request("Streaming is available with `response_format` json or text.", param="stream")
    if body.timestamp_granularities and body.response_format != "verbose_json":
        raise bad_request(
            "`timestamp_granularities` needs `response_format` verbose_json.", param="timestamp_granularities"
        )
    if body.include:
        raise bad_request(f"`include` values {body.include} are not available for Voxtral.", param="include")

    return AudioRequest(
        source=source,
        source_param=source_param,
        model=body.model or None,
        language=parse_language(body.language) if task == "transcribe" else None,
        temperature=body.temperature,
        response_format=body.response_format,
        stream=body.stream,
        chunking=_chunking(body.chunking_strategy),
        words="word" in body.timestamp_granularities,
    )
