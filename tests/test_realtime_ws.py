"""The simple `/ws` protocol: base64 PCM16 16 kHz in, one transcription message per turn out."""

import base64
import json
from datetime import UTC, datetime, timedelta

import httpx
from realtime_helpers import JFK_1, JFK_2, TOLERANCE_MS, build_recording, collect, count, pcm16, send_paced, ws_url
from websockets.asyncio.client import connect

from tests.conftest import EdgeServer


def seed_client_time(timestamp: str) -> datetime:
    """How the original voice stack's clients read `timestamp` (`2024-01-01T12:00:00Z`)."""
    parsed = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert datetime.fromisoformat(timestamp.replace("Z", "+00:00")) == parsed
    return parsed


async def test_ws_transcribes_each_turn(edge: EdgeServer) -> None:
    recording = build_recording([JFK_1, JFK_2])
    began = datetime.now(UTC).replace(microsecond=0)
    async with connect(f"{ws_url(edge)}/ws") as ws:
        await ws.send("not json")
        assert json.loads(await ws.recv())["type"] == "error"
        await ws.send(json.dumps({"type": "audio", "data": "@@"}))
        assert json.loads(await ws.recv())["code"] == "invalid_value"
        await send_paced(
            lambda data: ws.send(json.dumps({"type": "audio", "data": data})), pcm16(recording.audio), 32000
        )
        messages = await collect(ws.recv, count("transcription", 2))
    assert [m["type"] for m in messages] == ["transcription", "transcription"]
    for message, (start_ms, end_ms) in zip(messages, recording.truth_ms, strict=False):
        # The original stack's message, without the `confidence` that vLLM cannot give.
        assert set(message) == {"type", "text", "timestamp", "audio_start_ms", "audio_end_ms"}
        assert began <= seed_client_time(message["timestamp"]) <= datetime.now(UTC) + timedelta(seconds=1)
        assert isinstance(message["text"], str) and message["text"]
        assert abs(message["audio_start_ms"] - start_ms) <= TOLERANCE_MS
        assert abs(message["audio_end_ms"] - end_ms) <= TOLERANCE_MS
    metrics = httpx.get(f"{edge.url}/metrics").text  # noqa: ASYNC210 (a quick local read)
    assert 'edge_realtime_turns_total{outcome="completed"}' in metrics
    for part in ("total", "edge", "backend"):
        assert f'edge_realtime_turn_seconds_count{{part="{part}"}}' in metrics


async def test_ws_rejects_other_messages_and_goes_on(edge: EdgeServer) -> None:
    async with connect(f"{ws_url(edge)}/ws") as ws:
        await ws.send(json.dumps({"type": "session.update"}))
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == "unknown_event"
        await ws.send(json.dumps({"type": "audio", "data": base64.b64encode(bytes(3200)).decode()}))
        await ws.send(b"binary")
        assert json.loads(await ws.recv())["type"] == "error"
