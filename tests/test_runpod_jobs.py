"""The RunPod handler called in-process, against the session's real vLLM: every input form,
streaming, and bad inputs. Outputs must have the OpenAI shapes."""

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from server.core import metrics
from server.runpod import asgi_call
from server.runpod.backend import VLLMBackend
from server.runpod.jobs import Jobs
from tests.conftest import DATA, OPENAI_SEGMENT_FIELDS, SERVED_MODEL, EdgeServer, edge_settings

JFK_B64 = base64.b64encode((DATA / "jfk.flac").read_bytes()).decode()


@pytest_asyncio.fixture(loop_scope="function")
async def jobs(vllm_url: str) -> AsyncIterator[Jobs]:
    worker = Jobs(edge_settings(vllm_url, max_concurrency=3))
    yield worker
    await worker.aclose()


async def run(jobs: Jobs, job_input: Any) -> list[Any]:
    return [output async for output in jobs.handle({"id": "test-job", "input": job_input})]


def sse_payloads(outputs: list[str]) -> list[Any]:
    """The `data:` payloads of server-sent-event text outputs, each output being whole events."""
    payloads = []
    for output in outputs:
        assert isinstance(output, str) and output.startswith("data: ") and output.endswith("\n\n")
        for event in output.strip().split("\n\n"):
            data = event.removeprefix("data: ")
            payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


def test_backend_waits_for_the_vllm_at_vllm_url(vllm_url: str) -> None:
    backend = VLLMBackend(edge_settings(vllm_url, vllm_startup_timeout_s=30))
    assert backend.process is None
    backend.start()
    assert backend.death() is None


def test_concurrency_comes_from_max_concurrency(jobs: Jobs) -> None:
    assert jobs.concurrency(1) == 3


async def test_url_job_answers_openai_json(jobs: Jobs, media_url: str) -> None:
    [output] = await run(jobs, {"audio": f"{media_url}/jfk.flac"})
    assert set(output) == {"text", "usage"}
    assert isinstance(output["text"], str) and output["text"]
    assert output["usage"] == {"type": "duration", "seconds": 11}


async def test_base64_job_answers_verbose_json(jobs: Jobs) -> None:
    [output] = await run(jobs, {"audio": JFK_B64, "response_format": "verbose_json", "language": "en"})
    assert output["task"] == "transcribe"
    assert output["language"] == "en"
    assert output["duration"] == pytest.approx(11.0, abs=0.1)
    assert output["segments"], "verbose_json needs segments from speech detection"
    for segment in output["segments"]:
        assert set(segment) == OPENAI_SEGMENT_FIELDS
        assert 0 <= segment["start"] < segment["end"] <= output["duration"]


async def test_data_url_job_answers_srt(jobs: Jobs) -> None:
    [output] = await run(jobs, {"audio": f"data:audio/flac;base64,{JFK_B64}", "response_format": "srt"})
    assert isinstance(output, str)
    assert output.startswith("1\n00:00:") and " --> " in output


async def test_translate_task(jobs: Jobs, media_url: str) -> None:
    [output] = await run(
        jobs, {"audio": f"{media_url}/jfk.flac", "task": "translate", "response_format": "verbose_json"}
    )
    assert output["task"] == "translate"
    [text] = await run(jobs, {"audio": f"{media_url}/jfk.flac", "task": "translate", "response_format": "text"})
    assert isinstance(text, str) and text.endswith("\n")


async def test_streaming_job_yields_delta_events_then_done(jobs: Jobs, media_url: str) -> None:
    outputs = await run(jobs, {"audio": f"{media_url}/long.wav", "stream": True})
    *deltas, done = outputs
    assert deltas and all(d["type"] == "transcript.text.delta" and d["delta"] for d in deltas)
    assert done["type"] == "transcript.text.done"
    assert done["text"] == "".join(d["delta"] for d in deltas).strip()
    usage = done["usage"]
    assert usage["type"] == "tokens" and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_openai_route_transcription_with_base64_file(jobs: Jobs) -> None:
    [output] = await run(
        jobs,
        {"openai_route": "/v1/audio/transcriptions", "openai_input": {"model": "whisper-1", "file": JFK_B64}},
    )
    assert set(output) == {"text", "usage"} and output["usage"]["type"] == "duration"


async def test_openai_route_transcription_with_url_and_vtt(jobs: Jobs, media_url: str) -> None:
    [output] = await run(
        jobs,
        {
            "openai_route": "/v1/audio/transcriptions",
            "openai_input": {"file": f"{media_url}/jfk.flac", "response_format": "vtt"},
        },
    )
    assert output.startswith("WEBVTT\n\n00:00:")


async def test_openai_route_translation_stream_yields_sse(jobs: Jobs, media_url: str) -> None:
    outputs = await run(
        jobs,
        {"openai_route": "/v1/audio/translations", "openai_input": {"url": f"{media_url}/jfk.flac", "stream": True}},
    )
    *deltas, done = sse_payloads(outputs)
    assert all(event["type"] == "transcript.text.delta" for event in deltas)
    assert done["type"] == "transcript.text.done" and done["usage"]["output_tokens"] > 0


async def test_openai_route_chat_inlines_audio_urls(jobs: Jobs, media_url: str) -> None:
    def body(content: Any) -> dict[str, Any]:
        return {"model": "voxtral", "messages": [{"role": "user", "content": content}], "max_tokens": 3}

    audio_part = {"type": "audio_url", "audio_url": {"url": f"{media_url}/jfk.flac"}}
    [with_audio] = await run(
        jobs,
        {"openai_route": "/v1/chat/completions", "openai_input": body([audio_part, {"type": "text", "text": "Hi"}])},
    )
    [text_only] = await run(jobs, {"openai_route": "/v1/chat/completions", "openai_input": body("Hi")})
    assert with_audio["object"] == "chat.completion" and with_audio["model"] == SERVED_MODEL
    assert with_audio["usage"]["prompt_tokens"] > text_only["usage"]["prompt_tokens"] + 100


async def test_openai_route_chat_audio_url_to_private_address_is_refused_by_the_worker(jobs: Jobs) -> None:
    content = [{"type": "audio_url", "audio_url": {"url": "http://192.168.7.7/x.wav"}}]
    [output] = await run(
        jobs,
        {
            "openai_route": "/v1/chat/completions",
            "openai_input": {"messages": [{"role": "user", "content": content}], "max_tokens": 3},
        },
    )
    assert output["error"]["code"] == "url_not_allowed"


async def test_openai_route_chat_stream_yields_sse_chunks(jobs: Jobs) -> None:
    outputs = await run(
        jobs,
        {
            "openai_route": "/v1/chat/completions",
            "openai_input": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True},
        },
    )
    *chunks, last = sse_payloads(outputs)
    assert last == "[DONE]"
    assert chunks and all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)


async def test_openai_route_models_lists_what_the_http_route_lists(jobs: Jobs, edge: EdgeServer) -> None:
    [output] = await run(jobs, {"openai_route": "/v1/models"})
    async with httpx.AsyncClient(timeout=30) as client:
        listing = (await client.get(f"{edge.url}/v1/models")).json()
    assert output["object"] == listing["object"] == "list"
    assert [(m["id"], m.get("root")) for m in output["data"]] == [(m["id"], m.get("root")) for m in listing["data"]]
    assert {SERVED_MODEL, "whisper-1"} <= {model["id"] for model in output["data"]}


async def test_openai_route_stream_yields_chunks_before_its_end(jobs: Jobs) -> None:
    job = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "stream": True}
    outputs = await run(jobs, {"openai_route": "/v1/chat/completions", "openai_input": job})
    *before_end, end = outputs
    assert end == "data: [DONE]\n\n"
    assert len(before_end) > 1
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in sse_payloads(before_end))


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/models/gpt-5", None),
        ("/v1/chat/completions", {"model": "gpt-5", "messages": [{"role": "user", "content": "Hi"}]}),
        ("/v1/audio/transcriptions", {"url": "http://10.0.0.1/a.wav"}),
        ("/v1/realtime/client_secrets", {"expires_after": {"anchor": "created_at", "seconds": 1}}),
    ],
)
async def test_openai_route_api_error_is_the_routes_openai_error(
    jobs: Jobs, edge: EdgeServer, route: str, body: dict[str, Any] | None
) -> None:
    [output] = await run(jobs, {"openai_route": route, "openai_input": body})
    method = "GET" if body is None else "POST"
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.request(method, f"{edge.url}{route}", json=body)
    assert answer.status_code >= 400
    assert output == answer.json()
    assert set(output["error"]) == {"message", "type", "param", "code"}


async def test_jobs_pass_the_api_key_check_that_other_requests_to_the_app_meet(vllm_url: str) -> None:
    worker = Jobs(edge_settings(vllm_url, api_keys="ci:sk-test-0123456789abcdef"))
    try:
        [output] = await run(worker, {"openai_route": "/v1/models"})
        assert output["object"] == "list"
        # A request the worker did not send itself (no scope entry of its own) still needs a key.
        transport = httpx.ASGITransport(app=worker.edge.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            refused = await client.get("/v1/models", headers={"X-Voxtral-In-Process-Caller": "runpod"})
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
            headers = {"Authorization": "Bearer sk-test-0123456789abcdef"}
            assert (await client.get("/v1/models", headers=headers)).status_code == 200
    finally:
        await worker.aclose()


async def test_concurrent_jobs_share_one_start_of_the_app(jobs: Jobs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    outputs = await asyncio.gather(*(run(jobs, {"openai_route": "/v1/models"}) for _ in range(3)))
    assert all(output["object"] == "list" for [output] in outputs)
    assert len([r for r in caplog.records if r.message.startswith("edge ready")]) == 1
    assert await jobs.edge.services() is await jobs.edge.services()


def file_requests_in_flight() -> float:
    return metrics.FILE_BACKEND_IN_FLIGHT._value.get()


def requests_counted(route: str, status: str) -> float:
    return metrics.REQUESTS.labels(route, status)._value.get()


async def test_a_cancelled_job_disconnects_its_route_which_aborts_its_vllm_requests(jobs: Jobs, media_url: str) -> None:
    await run(jobs, {"openai_route": "/v1/models"})  # the app has started
    route = "/v1/audio/transcriptions"
    before = requests_counted(route, "499")
    job = asyncio.create_task(run(jobs, {"openai_route": route, "openai_input": {"url": f"{media_url}/long.wav"}}))
    deadline = time.monotonic() + 60
    while file_requests_in_flight() == 0:
        assert not job.done() and time.monotonic() < deadline, "the transcription never reached vLLM"
        await asyncio.sleep(0.005)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    # The route saw the client leave (it answers 499) before it could be cancelled, and let vLLM go.
    assert requests_counted(route, "499") == before + 1
    assert file_requests_in_flight() == 0


async def test_a_stream_left_early_ends_its_route_and_its_vllm_requests(jobs: Jobs, media_url: str) -> None:
    job = {"openai_route": "/v1/audio/transcriptions", "openai_input": {"url": f"{media_url}/long.wav", "stream": True}}
    outputs = jobs.handle({"id": "test-job", "input": job})
    first = await anext(outputs)
    assert '"transcript.text.delta"' in first
    started = time.monotonic()
    await outputs.aclose()
    # The route ended by itself on the disconnect, well before it would have been cancelled.
    assert time.monotonic() - started < asgi_call.DISCONNECT_GRACE_S
    assert file_requests_in_flight() == 0
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("in-process")] == []


# The in-process caller itself, with small ASGI apps: what they send reaches the caller at once,
# and a caller that leaves early disconnects them.

SCOPE = {"type": "http", "method": "GET", "path": "/", "headers": []}


async def test_in_process_response_arrives_chunk_by_chunk() -> None:
    first_read = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await first_read.wait()  # a caller that buffered the response would wait for ever
        await send({"type": "http.response.body", "body": b"two"})

    async with asgi_call.request(app, SCOPE) as response:
        assert response.status == 200 and response.media_type == "text/plain"
        chunks = response.chunks()
        assert await asyncio.wait_for(anext(chunks), 10) == b"one"
        first_read.set()
        assert [chunk async for chunk in chunks] == [b"two"]


async def test_in_process_caller_that_leaves_disconnects_the_app() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((await receive())["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        seen.append((await receive())["type"])

    async with asgi_call.request(app, SCOPE, b"body") as response:
        assert await anext(response.chunks()) == b"one"
    assert seen == ["http.request", "http.disconnect"]


async def test_in_process_app_that_ignores_the_disconnect_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asgi_call, "DISCONNECT_GRACE_S", 0.05)
    cancelled = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with asgi_call.request(app, SCOPE):
        pass
    assert cancelled.is_set()


async def test_in_process_app_error_reaches_the_caller() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        raise RuntimeError("broken")

    async with asgi_call.request(app, SCOPE) as response:
        with pytest.raises(RuntimeError, match="broken"):
            _ = [chunk async for chunk in response.chunks()]


@pytest.mark.parametrize(
    ("job_input", "message"),
    [
        ({"audio": "not base64 at all!"}, "neither a URL"),
        ({"audio": "http://192.168.7.7/talk.mp3"}, "not a public address"),
        ({"audio": "ftp://example.com/talk.mp3"}, "Unsupported URL scheme"),
        ({"response_format": "json"}, "No audio"),
        ({"audio": JFK_B64, "response_format": "docx"}, "`response_format` must be one of"),
        ({"audio": JFK_B64, "response_format": "srt", "stream": True}, "Streaming is available"),
        ({"audio": JFK_B64, "language": "klingon"}, "ISO-639-1"),
        ({"audio": JFK_B64, "task": "summarize"}, "`task` must be"),
        ({"audio": JFK_B64, "model": "gpt-5"}, "does not exist"),
        ({"audio": base64.b64encode(b"not audio").decode()}, "decode"),
        ("just a string", "must be an object"),
        (None, "must be an object"),
    ],
)
async def test_bad_native_inputs_fail_the_job_with_a_message(jobs: Jobs, job_input: Any, message: str) -> None:
    [output] = await run(jobs, job_input)
    assert set(output) == {"error"}
    assert message.lower() in output["error"].lower()


@pytest.mark.parametrize(
    ("job_input", "code"),
    [
        ({"openai_route": "/v1/embeddings", "openai_input": {}}, "unknown_route"),
        ({"openai_route": "/v1/audio/transcriptions", "openai_input": {}}, "missing_audio"),
        ({"openai_route": "/v1/audio/transcriptions", "openai_input": {"file": "%%%"}}, "invalid_audio"),
        ({"openai_route": "/v1/audio/transcriptions", "openai_input": "file"}, "invalid_value"),
        ({"openai_route": "/v1/chat/completions", "openai_input": {"messages": []}}, "invalid_value"),
    ],
)
async def test_bad_openai_inputs_fail_with_openai_errors(jobs: Jobs, job_input: Any, code: str) -> None:
    [output] = await run(jobs, job_input)
    assert set(output) == {"error"}
    assert set(output["error"]) == {"message", "type", "param", "code"}
    assert output["error"]["code"] == code and output["error"]["message"]
