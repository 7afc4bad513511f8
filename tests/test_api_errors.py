"""Every bad input gets an OpenAI-shaped error with the right status, and the edge stays healthy."""

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import DATA, EdgeServer, assert_still_healthy, free_port
from tests.failure_backends import CrashingBackend, HungBackend

TRANSCRIBE = "/v1/audio/transcriptions"


def assert_openai_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


@pytest.fixture(autouse=True)
def still_healthy(edge: EdgeServer) -> Iterator[None]:
    """After every test here the edge still answers, and still transcribes."""
    yield
    assert_still_healthy(edge, transcribes=True)


def post(edge: EdgeServer, data: dict | None = None, files: dict | None = None, **kw: object) -> httpx.Response:
    return httpx.post(f"{edge.url}{TRANSCRIBE}", data=data, files=files, timeout=60, **kw)


def jfk() -> dict:
    return {"file": ("jfk.flac", (DATA / "jfk.flac").read_bytes(), "audio/flac")}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": "docx"}, "response_format"),
        ({"language": "klingon"}, "language"),
        ({"language": "xx"}, "language"),
        ({"temperature": "3"}, "temperature"),
        ({"temperature": "warm"}, "temperature"),
        ({"stream": "maybe"}, "stream"),
        ({"stream": "true", "response_format": "srt"}, "stream"),
        ({"timestamp_granularities[]": "word", "response_format": "verbose_json"}, "timestamp_granularities"),
        ({"timestamp_granularities[]": "segment"}, "timestamp_granularities"),
        ({"chunking_strategy": "sometimes"}, "chunking_strategy"),
        ({"include[]": "logprobs"}, "include"),
    ],
)
def test_bad_field_values(edge: EdgeServer, fields: dict, param: str) -> None:
    assert_openai_error(post(edge, fields, jfk()), 400, param)


def test_unknown_model_is_404(edge: EdgeServer) -> None:
    error = assert_openai_error(post(edge, {"model": "gpt-9"}, jfk()), 404, "model")
    assert error["code"] == "model_not_found"


def test_sdk_raises_typed_errors(edge: EdgeServer) -> None:
    client = openai.OpenAI(base_url=f"{edge.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="Word timestamps"):
        with open(DATA / "jfk.flac", "rb") as f:
            client.audio.transcriptions.create(
                model="whisper-1", file=f, response_format="verbose_json", timestamp_granularities=["word"]
            )
    with pytest.raises(openai.NotFoundError):
        with open(DATA / "jfk.flac", "rb") as f:
            client.audio.transcriptions.create(model="nope", file=f)


@pytest.mark.parametrize(
    ("content", "name"),
    [
        (b"this is not audio at all" * 100, "garbage.mp3"),
        (b"", "empty.wav"),
        ((DATA / "jfk.flac").read_bytes()[:200], "truncated.flac"),
        (
            b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80>\x00\x00\x00}\x00\x00"
            b"\x02\x00\x10\x00data\x00\x00\x00\x00",
            "zero-length.wav",
        ),
        (
            b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x34\x12\x01\x00\x80>\x00\x00\x00}\x00\x00"
            b"\x02\x00\x10\x00data\x00\x10\x00\x00" + bytes(4096),
            "format-tag-0x1234.wav",
        ),
    ],
)
def test_undecodable_audio_is_400(edge: EdgeServer, content: bytes, name: str) -> None:
    error = assert_openai_error(post(edge, files={"file": (name, content, "application/octet-stream")}), 400, "file")
    assert error["code"] in ("invalid_audio", "empty_audio")


def test_missing_audio_is_400(edge: EdgeServer) -> None:
    assert_openai_error(post(edge, {"model": "whisper-1"}), 400, "file")


def test_file_and_url_together_is_400(edge: EdgeServer) -> None:
    assert_openai_error(post(edge, {"url": "https://example.com/a.mp3"}, jfk()), 400, "url")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b"garbage that never opens a part"),
        ("multipart/form-data", b"--xyz\r\n"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nContent-Type: text/plain\r\n\r\nx\r\n--xyz--\r\n"),
    ],
)
def test_malformed_multipart_is_422(edge: EdgeServer, content_type: str, body: bytes) -> None:
    r = httpx.post(f"{edge.url}{TRANSCRIBE}", content=body, headers={"Content-Type": content_type}, timeout=30)
    assert "malformed" in assert_openai_error(r, 422)["message"]


def test_malformed_json_is_422(edge: EdgeServer) -> None:
    r = httpx.post(f"{edge.url}{TRANSCRIBE}", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_openai_error(r, 422)


def test_unknown_route_is_404(edge: EdgeServer) -> None:
    assert_openai_error(httpx.post(f"{edge.url}/v1/audio/speech", json={}), 404)
    assert_openai_error(httpx.get(f"{edge.url}/v2/nothing"), 404)


def test_private_url_is_400(edge: EdgeServer) -> None:
    for url in (
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/a.wav",
        "file:///etc/passwd",
        "http://[::1]:9/a.wav",
    ):
        assert_openai_error(post(edge, {"url": url}), 400)


@pytest.mark.parametrize("host", ["a" * 64 + ".example", "a" * 10_000, "xn--"])
def test_invalid_host_name_is_400(edge: EdgeServer, host: str) -> None:
    error = assert_openai_error(post(edge, {"url": f"http://{host}/a.wav"}), 400)
    assert "host" in error["message"]


def test_too_large_is_413(make_edge) -> None:
    small = make_edge(max_upload_mb=0.5)
    big = (DATA / "silero_test.wav").read_bytes()  # 1.9 MB
    assert_openai_error(post(small, files={"file": ("a.wav", big, "audio/wav")}), 413)

    def chunks() -> Iterator[bytes]:
        body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' + big + b"\r\n--b--\r\n"
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    r = httpx.post(
        f"{small.url}{TRANSCRIBE}",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
        timeout=30,
    )
    assert_openai_error(r, 413)


def test_too_long_audio_is_413(make_edge) -> None:
    short = make_edge(max_audio_s=5)
    assert_openai_error(post(short, files=jfk()), 413)


def test_backend_unreachable_is_503_with_retry_after(make_edge) -> None:
    down = make_edge(vllm_url=f"http://127.0.0.1:{free_port()}")
    r = post(down, files=jfk())
    assert_openai_error(r, 503)
    assert r.headers["Retry-After"]
    ready = httpx.get(f"{down.url}/ready")
    assert ready.status_code == 503 and ready.headers["Retry-After"]
    assert httpx.get(f"{down.url}/health").status_code == 200


def test_backend_timeout_is_504(make_edge) -> None:
    hung = HungBackend()
    try:
        edge = make_edge(vllm_url=hung.url, backend_timeout_s=1.0)
        assert_openai_error(post(edge, files=jfk()), 504)
    finally:
        hung.close()


def test_backend_failure_is_502(make_edge) -> None:
    crashing = CrashingBackend()
    try:
        edge = make_edge(vllm_url=crashing.url)
        error = assert_openai_error(post(edge, files=jfk()), 502)
        assert "EngineCore died" in error["message"]
        r = httpx.post(
            f"{edge.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
        )
        assert_openai_error(r, 502)
    finally:
        crashing.close()


def test_vllm_own_400_is_passed_on(edge: EdgeServer) -> None:
    # 'ja' is a valid ISO-639-1 code, so the edge passes it; vLLM decides what it supports.
    r = httpx.post(
        f"{edge.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5},
        timeout=30,
    )
    assert_openai_error(r, 400)
