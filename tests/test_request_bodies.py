"""Client mistakes in the request body are 4xx in OpenAI's shape, never a 500; an unexpected error
is a clean 500 that closes the connection, and the edge keeps serving. The OpenAPI document
describes every request body."""

from collections.abc import Iterator

import httpx
import pytest

from server.runpod.jobs import Jobs
from tests.conftest import DATA, EdgeServer, assert_still_healthy, edge_settings
from tests.test_api_errors import assert_openai_error

TRANSCRIBE = "/v1/audio/transcriptions"
CHAT = "/v1/chat/completions"


@pytest.fixture(autouse=True)
def still_healthy(edge: EdgeServer) -> Iterator[None]:
    yield
    assert_still_healthy(edge)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": "data:,x", "timestamp_granularities": 5}, "timestamp_granularities"),
        ({"url": "data:,x", "timestamp_granularities": True}, "timestamp_granularities"),
        ({"url": "data:,x", "timestamp_granularities": [{}]}, "timestamp_granularities"),
        ({"url": "data:,x", "temperature": True}, "temperature"),
        ({"url": "data:,x", "temperature": []}, "temperature"),
        ({"url": "data:,x", "temperature": {}}, "temperature"),
        ({"url": "data:,x", "response_format": []}, "response_format"),
        ({"url": "data:,x", "model": 5}, "model"),
        ({"url": 5}, "url"),
        ({"url": "data:,x", "chunking_strategy": {"type": "server_vad", "threshold": True}}, "chunking_strategy"),
        ({"url": "data:,x", "chunking_strategy": {"type": "server_vad", "extra": 1}}, "chunking_strategy"),
        ({"url": "data:,x", "stream": [1]}, "stream"),
        ({"file": "aGVsbG8="}, "file"),
    ],
)
def test_json_values_of_the_wrong_type_are_400(edge: EdgeServer, body: dict, param: str) -> None:
    assert_openai_error(httpx.post(f"{edge.url}{TRANSCRIBE}", json=body, timeout=30), 400, param)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ([("model", "a"), ("model[]", "b")], "model"),
        ([("model[]", "a"), ("model", "b")], "model"),
        ([("file[]", "x")], "file"),
        ([("chunking_strategy", "auto"), ("chunking_strategy[type]", "server_vad")], "chunking_strategy"),
        ([("chunking_strategy", "[" * 100_000)], "chunking_strategy"),
        ([("chunking_strategy[threshold]", "x")], "chunking_strategy"),
    ],
)
def test_repeated_and_odd_form_fields_are_400(edge: EdgeServer, fields: list, param: str) -> None:
    files = [
        ("file", ("jfk.flac", (DATA / "jfk.flac").read_bytes(), "audio/flac")),
        *[(k, (None, v)) for k, v in fields],
    ]
    assert_openai_error(httpx.post(f"{edge.url}{TRANSCRIBE}", files=files, timeout=30), 400, param)


def test_form_keys_of_the_sdk_still_work(edge: EdgeServer) -> None:
    files = [
        ("file", ("jfk.flac", (DATA / "jfk.flac").read_bytes(), "audio/flac")),
        ("response_format", (None, "verbose_json")),
        ("timestamp_granularities[]", (None, "segment")),
        ("chunking_strategy[type]", (None, "server_vad")),
        ("chunking_strategy[threshold]", (None, "0.4")),
    ]
    r = httpx.post(f"{edge.url}{TRANSCRIBE}", files=files, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["segments"]


@pytest.mark.parametrize("path", [TRANSCRIBE, "/v1/audio/translations", CHAT])
@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_deeply_nested_json_is_refused(edge: EdgeServer, path: str, depth: int) -> None:
    body = '{"url": "data:,x", "messages": ' + nested(depth) + "}"
    r = httpx.post(f"{edge.url}{path}", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert "nested deeper" in assert_openai_error(r, 422)["message"]


async def test_deeply_nested_runpod_job_input_is_refused(vllm_url: str) -> None:
    jobs = Jobs(edge_settings(vllm_url))
    try:
        deep: list = []
        for _ in range(5000):
            deep = [deep]
        job = {"openai_route": CHAT, "openai_input": {"messages": [{"role": "user", "content": deep}]}}
        [output] = [out async for out in jobs.handle({"id": "t", "input": job})]
        assert output["error"]["code"] == "invalid_json" and "nested deeper" in output["error"]["message"]
    finally:
        await jobs.aclose()


def test_chat_body_fields_are_checked(edge: EdgeServer) -> None:
    for body, param in (
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "model": 5}, "model"),
        ({"messages": [{"role": "user", "content": "hi"}], "stream": [1]}, "stream"),
    ):
        assert_openai_error(httpx.post(f"{edge.url}{CHAT}", json=body, timeout=30), 400, param)


# Decoding and fetching raise `InputError` without a field; the boundary names the field the audio came from.


def test_chat_audio_that_cannot_be_decoded_names_messages(edge: EdgeServer) -> None:
    part = {"type": "input_audio", "input_audio": {"data": "bm90IGF1ZGlv", "format": "wav"}}
    body = {"messages": [{"role": "user", "content": [part]}], "max_tokens": 2}
    assert_openai_error(httpx.post(f"{edge.url}{CHAT}", json=body, timeout=30), 400, "messages")


def test_undecodable_audio_at_a_url_names_url(edge: EdgeServer) -> None:
    body = {"url": "data:audio/wav;base64,bm90IGF1ZGlv"}
    assert_openai_error(httpx.post(f"{edge.url}{TRANSCRIBE}", json=body, timeout=30), 400, "url")


async def test_runpod_audio_errors_name_the_jobs_field(vllm_url: str) -> None:
    jobs = Jobs(edge_settings(vllm_url))
    try:
        job = {"openai_route": TRANSCRIBE, "openai_input": {"file": "http://10.0.0.1/a.wav"}}
        [output] = [out async for out in jobs.handle({"id": "t", "input": job})]
        assert output["error"]["param"] == "file"
    finally:
        await jobs.aclose()


def test_unexpected_error_is_a_clean_500_that_closes_the_connection(vllm_url: str) -> None:
    """A route that fails unexpectedly (added to the real app for this test: no real request can
    make the edge fail so any more) answers a 500 the client can read, tells it to reconnect, and
    the next request on the same client is served."""
    edge = EdgeServer(edge_settings(vllm_url))

    async def broken() -> None:
        raise RuntimeError("a bug")

    edge.app.add_api_route("/test/broken", broken, methods=["GET"])
    edge.start()
    try:
        with httpx.Client(base_url=edge.url, timeout=30) as client:
            assert client.get("/health").status_code == 200
            r = client.get("/test/broken")
            assert r.headers["connection"] == "close"
            assert assert_openai_error(r, 500)["code"] == "internal_error"
            for _ in range(3):
                assert client.get("/health").status_code == 200
                assert client.get("/test/broken").status_code == 500
    finally:
        edge.stop()


def test_openapi_describes_every_request_body(edge: EdgeServer) -> None:
    paths = httpx.get(f"{edge.url}/openapi.json").json()["paths"]
    for path in (TRANSCRIBE, "/v1/audio/translations"):
        content = paths[path]["post"]["requestBody"]["content"]
        assert {"multipart/form-data", "application/json"} <= set(content)
        form = content["multipart/form-data"]["schema"]["properties"]
        assert {"file", "url", "model", "response_format", "temperature", "stream", "chunking_strategy"} <= set(form)
        assert "file" not in content["application/json"]["schema"]["properties"]
        assert form["response_format"]["enum"] == ["json", "text", "verbose_json", "srt", "vtt"]
    chat = paths[CHAT]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages", "stream"} <= set(chat["properties"]) and chat["required"] == ["messages"]
    assert "$defs" not in str(paths)
    schemas = httpx.get(f"{edge.url}/openapi.json").json()["components"]["schemas"]
    for path, model in (
        ("/v1/realtime/client_secrets", "ClientSecretRequest"),
        ("/v1/realtime/transcription_sessions", "BetaTranscriptionSessionRequest"),
    ):
        assert paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(model)
    ga = schemas["ClientSecretRequest"]["properties"]["session"]["anyOf"][0]["properties"]
    audio_input = ga["audio"]["properties"]["input"]["properties"]
    assert {"format", "transcription", "turn_detection"} <= set(audio_input)
    assert audio_input["format"]["properties"]["type"]["enum"] == ["audio/pcm", "audio/pcmu", "audio/pcma"]
    beta = schemas["BetaTranscriptionSessionRequest"]["properties"]
    assert {"client_secret", "input_audio_format", "input_audio_transcription", "turn_detection"} <= set(beta)
