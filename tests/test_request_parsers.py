"""Property tests of the request parsers: arbitrary JSON (and form fields) either parse or raise an
`APIError` with a 4xx status; no other exception escapes (it would be a 500)."""

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import FormData

from server.api.chat_audio import parse_chat
from server.core.errors import APIError
from server.files.audio_request import AudioRequest, parse_audio_request
from server.protocol.request_body import MAX_JSON_DEPTH, fold_form, json_depth_ok, loads_bounded

FIELDS = [
    "url",
    "file",
    "model",
    "language",
    "prompt",
    "response_format",
    "temperature",
    "stream",
    "timestamp_granularities",
    "chunking_strategy",
    "include",
    "messages",
]
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
request_objects = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=8)
# Values a client might mean: right types, wrong values, and the strings a form sends.
likely_values = st.sampled_from(
    ["json", "srt", "verbose_json", "auto", "segment", "word", "en", "true", "0.5", "2", "", "[", "{", '{"type": 1}']
)
likely_objects = st.dictionaries(st.sampled_from(FIELDS), likely_values | json_values, max_size=8)


def refused_or_parsed(call: Any) -> Any:
    try:
        return call()
    except APIError as exc:
        assert 400 <= exc.status < 500, exc.message
        assert exc.message
        return exc


@settings(max_examples=400, deadline=None)
@given(st.one_of(request_objects, likely_objects), st.sampled_from(["transcribe", "translate"]))
def test_audio_request_from_any_json_object(fields: dict[str, Any], task: str) -> None:
    result = refused_or_parsed(lambda: parse_audio_request(fields, task=task))
    if isinstance(result, AudioRequest):
        assert result.response_format in ("json", "text", "verbose_json", "srt", "vtt")
        assert 0.0 <= result.temperature <= 1.0
        assert isinstance(result.stream, bool)


@settings(max_examples=300, deadline=None)
@given(request_objects)
def test_chat_body_from_any_json_object(fields: dict[str, Any]) -> None:
    result = refused_or_parsed(lambda: parse_chat(fields))
    if isinstance(result, dict):
        assert isinstance(result["messages"], list) and result["messages"]
        extras = {k: v for k, v in fields.items() if k not in ("model", "messages", "stream")}
        kept = {k: result[k] for k in extras}
        assert json.dumps(kept, sort_keys=True) == json.dumps(extras, sort_keys=True)  # NaN-safe comparison


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | json_values.map(json.dumps) | st.integers(0, 5000).map(lambda n: "[" * n + "]" * n))
def test_json_text_parses_or_is_refused(text: str) -> None:
    try:
        value = loads_bounded(text)
    except ValueError:
        return
    except APIError as exc:
        assert exc.status == 422
        return
    assert json_depth_ok(value, MAX_JSON_DEPTH)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(FIELDS) | st.text(max_size=6),
            st.sampled_from(["", "[]", "[type]", "[threshold]", "[", "]"]),
            likely_values,
        ),
        max_size=8,
    )
)
def test_form_fields_fold_or_are_refused(items: list[tuple[str, str, str]]) -> None:
    form = FormData([(name + suffix, value) for name, suffix, value in items])
    fields = refused_or_parsed(lambda: fold_form(form))
    if isinstance(fields, dict):
        refused_or_parsed(lambda: parse_audio_request(fields, task="transcribe"))
