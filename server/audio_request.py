"""Parse and validate an OpenAI transcription/translation request (multipart form or JSON body).

Besides OpenAI's fields, a `url` field may replace `file`: an http(s) URL, a `data:` URL, or a
path under `MEDIA_DIR`. Every invalid value is refused here with a 400 naming the field.
"""

import json
from dataclasses import dataclass
from typing import Any, BinaryIO

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from server.errors import APIError, bad_request
from server.formats import RESPONSE_FORMATS
from server.input_errors import InputError
from server.languages import language_code
from server.transcription import ServerVadChunking, TranscriptionOptions

GRANULARITIES = ("segment", "word")


@dataclass
class AudioRequest:
    source: BinaryIO | str
    filename: str | None
    model: str | None
    language: str | None
    temperature: float
    response_format: str
    stream: bool
    chunking: ServerVadChunking | None

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


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise bad_request(f"`{name}` must be true or false, not {value!r}.", param=name)


def _float(value: Any, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad_request(f"`{name}` must be a number, not {value!r}.", param=name) from None
    if not low <= number <= high:
        raise bad_request(f"`{name}` must be between {low:g} and {high:g}, not {number:g}.", param=name)
    return number


def _int(value: Any, name: str, low: int, high: int) -> int:
    number = _float(value, name, low, high)
    if number != int(number):
        raise bad_request(f"`{name}` must be a whole number, not {value!r}.", param=name)
    return int(number)


def parse_language(value: Any) -> str | None:
    """An ISO-639-1 code, lower-cased; anything else is a 400."""
    try:
        return language_code(value)
    except InputError as exc:
        raise exc.api_error("language") from None


def parse_chunking(value: Any) -> ServerVadChunking | None:
    """`"auto"` (or absent) → None; `{"type": "server_vad", ...}` → its parameters."""
    if value in (None, "", "auto"):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise bad_request(
                '`chunking_strategy` must be "auto" or a server_vad object.', param="chunking_strategy"
            ) from None
    if not isinstance(value, dict) or value.get("type") != "server_vad":
        raise bad_request(
            '`chunking_strategy` must be "auto" or {"type": "server_vad", ...}.', param="chunking_strategy"
        )
    unknown = set(value) - {"type", "threshold", "prefix_padding_ms", "silence_duration_ms"}
    if unknown:
        raise bad_request(f"Unknown `chunking_strategy` fields: {sorted(unknown)}.", param="chunking_strategy")
    defaults = ServerVadChunking()
    return ServerVadChunking(
        threshold=_float(value.get("threshold", defaults.threshold), "chunking_strategy.threshold", 0.0, 1.0),
        prefix_padding_ms=_int(
            value.get("prefix_padding_ms", defaults.prefix_padding_ms), "chunking_strategy.prefix_padding_ms", 0, 10_000
        ),
        silence_duration_ms=_int(
            value.get("silence_duration_ms", defaults.silence_duration_ms),
            "chunking_strategy.silence_duration_ms",
            0,
            10_000,
        ),
    )


def _form_fields(form: FormData) -> dict[str, Any]:
    """Fold the SDK's `key[]` lists and `key[sub]` objects into plain values."""
    fields: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key.endswith("[]"):
            fields.setdefault(key[:-2], []).append(value)
        elif "[" in key and key.endswith("]"):
            outer, inner = key[:-1].split("[", 1)
            nested = fields.setdefault(outer, {})
            if isinstance(nested, dict):
                nested[inner] = value
        elif key in fields:
            raise bad_request(f"Field `{key}` was sent more than once.", param=key)
        else:
            fields[key] = value
    return fields


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object (422 otherwise)."""
    try:
        body = await request.json()
    except ValueError:
        raise APIError(422, "The JSON body is malformed.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(422, "The JSON body must be an object.", code="invalid_json")
    return body


async def read_fields(request: Request) -> dict[str, Any]:
    """The request's fields from a multipart/urlencoded form or a JSON object."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return await read_json_object(request)
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=1, max_fields=100)
        except APIError:
            raise
        except Exception as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            raise APIError(422, f"The form body is malformed: {detail}", code="invalid_form") from None
        return _form_fields(form)
    raise bad_request(
        "Send the request as multipart/form-data (with `file` or `url`) or as a JSON object (with `url`).",
        code="unsupported_content_type",
    )


def parse_audio_request(fields: dict[str, Any], *, task: str) -> AudioRequest:
    upload, url = fields.get("file"), fields.get("url")
    if upload is not None and url not in (None, ""):
        raise bad_request("Send either `file` or `url`, not both.", param="url")
    if isinstance(upload, UploadFile):
        source: BinaryIO | str = upload.file
        filename = upload.filename
    elif isinstance(url, str) and url.strip():
        source, filename = url.strip(), None
    elif upload is not None:
        raise bad_request("`file` must be an uploaded file.", param="file")
    else:
        raise bad_request("No audio: send a `file` upload or a `url`.", param="file", code="missing_audio")

    response_format = str(fields.get("response_format") or "json")
    if response_format not in RESPONSE_FORMATS:
        raise bad_request(
            f"`response_format` must be one of {', '.join(RESPONSE_FORMATS)}, not {response_format!r}.",
            param="response_format",
        )
    stream = _bool(fields.get("stream", False), "stream")
    if stream and response_format not in ("json", "text"):
        raise bad_request("Streaming is available with `response_format` json or text.", param="stream")

    granularities = fields.get("timestamp_granularities") or []
    if isinstance(granularities, str):
        granularities = [granularities]
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            raise bad_request(f"Unknown timestamp granularity {granularity!r}.", param="timestamp_granularities")
        if granularity == "word":
            raise bad_request(
                "Word timestamps are not available: Voxtral served by vLLM gives no word timing. "
                "Use `segment`, which comes from speech detection.",
                param="timestamp_granularities",
                code="unsupported_value",
            )
    if granularities and response_format != "verbose_json":
        raise bad_request(
            "`timestamp_granularities` needs `response_format` verbose_json.", param="timestamp_granularities"
        )

    include = fields.get("include") or []
    if include:
        raise bad_request(f"`include` values {include} are not available for Voxtral.", param="include")

    language = parse_language(fields.get("language")) if task == "transcribe" else None
    model = fields.get("model")
    return AudioRequest(
        source=source,
        filename=filename,
        model=str(model) if model not in (None, "") else None,
        language=language,
        temperature=_float(fields.get("temperature", 0.0) or 0.0, "temperature", 0.0, 1.0),
        response_format=response_format,
        stream=stream,
        chunking=parse_chunking(fields.get("chunking_strategy")),
    )
