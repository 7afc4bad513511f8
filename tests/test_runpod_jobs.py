"""The RunPod handler called in-process, against the session's real vLLM: every input form,
streaming, and bad inputs. Outputs must have the OpenAI shapes."""

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from server.runpod.backend import VLLMBackend
from server.runpod.jobs import Jobs
from tests.conftest import DATA, OPENAI_SEGMENT_FIELDS, SERVED_MODEL, edge_settings

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


async def test_openai_route_models(jobs: Jobs) -> None:
    [output] = await run(jobs, {"openai_route": "/v1/models"})
    assert output["object"] == "list"
    assert [model["id"] for model in output["data"]] == [SERVED_MODEL]


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
