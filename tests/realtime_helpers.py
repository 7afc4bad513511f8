"""Helpers for the realtime tests: recordings with known turns, audio encoders, event collection.

Ground truth: single utterances are cut from the test recordings where the offline VAD (tested
against silero-vad on its own) finds exactly one speech region, and joined with silences. A
turn's truth is where its clip was placed plus the region inside the clip: the start moved back by
`prefix_padding_ms`, the end where the speech stopped.
"""

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr
from openai import AsyncOpenAI
from prometheus_client import REGISTRY
from vad_helpers import load_recording

from tests.conftest import EdgeServer
from vad import BatchedVADEngine, EngineStream, StreamParams, VADParams, speech_segments
from vad.streaming import Event as VADEvent

RATE = 16000
PREFIX_MS = 300
SILENCE_MS = 500
TRANSCRIPTION = "conversation.item.input_audio_transcription"
TEXT_REPLY = [  # a conversation session's text reply, in OpenAI's order (one delta), before `response.done`
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
]
VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": PREFIX_MS, "silence_duration_ms": SILENCE_MS}
TOLERANCE_MS = 100

# (recording, start s, end s): each holds one utterance with silence around it.
JFK_1 = ("jfk.flac", 0.0, 2.9)
JFK_2 = ("jfk.flac", 2.8, 4.9)
SILERO_1 = ("silero_test.wav", 2.3, 8.5)


@dataclass(frozen=True)
class Recording:
    audio: np.ndarray
    truth_ms: list[tuple[int, int]]


def build_recording(clips: list[tuple[str, float, float]], gap_s: float = 1.5, lead_s: float = 0.5) -> Recording:
    """The clips joined with `gap_s` of silence (and `lead_s` before, `gap_s` after)."""
    pieces = [np.zeros(int(lead_s * RATE), dtype=np.float32)]
    truth: list[tuple[int, int]] = []
    offset = len(pieces[0])
    params = VADParams(min_silence_duration_ms=SILENCE_MS, speech_pad_ms=0, min_speech_duration_ms=0)
    for name, start_s, end_s in clips:
        clip = load_recording(name)[int(start_s * RATE) : int(end_s * RATE)]
        gap = np.zeros(int(gap_s * RATE), dtype=np.float32)
        regions = speech_segments(np.concatenate([clip, gap]), params)
        assert len(regions) == 1, f"{name} {start_s}-{end_s} must hold one utterance, VAD found {regions}"
        start = offset + regions[0].start_sample - PREFIX_MS * RATE // 1000
        truth.append((start * 1000 // RATE, (offset + regions[0].end_sample) * 1000 // RATE))
        pieces += [clip, gap]
        offset += len(clip) + len(gap)
    return Recording(np.concatenate(pieces), truth)


def pcm16(audio: np.ndarray, rate: int = RATE) -> bytes:
    """16 kHz float audio as little-endian PCM16 at `rate`."""
    if rate != RATE:
        audio = soxr.resample(audio, RATE, rate)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def ulaw(audio: np.ndarray) -> bytes:
    """16 kHz float audio as 8 kHz G.711 u-law (the ITU-T segment encoder)."""
    x = np.clip(soxr.resample(audio, RATE, 8000) * 32768, -32768, 32767).astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def alaw(audio: np.ndarray) -> bytes:
    """16 kHz float audio as 8 kHz G.711 A-law."""
    x = np.clip(soxr.resample(audio, RATE, 8000) * 32768, -32768, 32767).astype(np.int32) >> 3
    sign = np.where(x >= 0, 0x80, 0)
    magnitude = np.minimum(np.where(x >= 0, x, -x - 1), 4095)
    exponent = np.where(magnitude < 32, 0, np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 4)
    mantissa = np.where(exponent == 0, magnitude >> 1, magnitude >> exponent) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8).tobytes()


def chunks(data: bytes, size: int) -> Iterator[str]:
    """Base64 pieces of `size` bytes."""
    for i in range(0, len(data), size):
        yield base64.b64encode(data[i : i + size]).decode()


def ws_url(edge: EdgeServer) -> str:
    return edge.url.replace("http://", "ws://")


def openai_client(edge: EdgeServer) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="unused", base_url=f"{edge.url}/v1", websocket_base_url=f"{ws_url(edge)}/v1")


async def send_paced(
    send: Callable[[str], Any], data: bytes, bytes_per_s: int, chunk_s: float = 0.1, real_time: bool = False
) -> None:
    """Send `data` in `chunk_s` pieces, as fast as possible or at the pace of the audio."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    size = int(bytes_per_s * chunk_s)
    for i, piece in enumerate(chunks(data, size)):
        await send(piece)
        if real_time:
            await asyncio.sleep(max(0.0, started + (i + 1) * chunk_s - loop.time()))


async def collect(
    recv: Callable[[], Any], done: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
) -> list[dict[str, Any]]:
    """Receive JSON events until `done(events)` holds."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not done(events):
            raw = await recv()
            events.append(json.loads(raw))
    return events


def count(kind: str, n: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: sum(e["type"] == kind for e in events) >= n


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def edge_task_names(edge: EdgeServer) -> list[str]:
    """Names of the tasks alive on the edge's event loop."""
    loop = edge.server.servers[0].get_loop()

    async def names() -> list[str]:
        return [task.get_name() for task in asyncio.all_tasks()]

    return asyncio.run_coroutine_threadsafe(names(), loop).result(10)


async def wait_until(condition: Callable[[], bool], timeout: float = 15, poll_s: float = 0.2) -> None:
    """Wait on the event loop until `condition()` holds; `TimeoutError` after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(poll_s)


class SlowVADEngine:
    """A test double for the VAD step only: the real shared engine, but every feed waits `delay_s`
    first, as on an overloaded machine. Install it with `slow_vad(edge, delay_s)`."""

    def __init__(self, engine: BatchedVADEngine, delay_s: float) -> None:
        self._engine = engine
        self._delay_s = delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)  # start, stop and the rest: the real engine's

    def open_stream(self, params: StreamParams | None = None) -> "SlowVADStream":
        return SlowVADStream(self._engine.open_stream(params), self._delay_s)


class SlowVADStream:
    def __init__(self, stream: EngineStream, delay_s: float) -> None:
        self._stream = stream
        self._delay_s = delay_s

    async def feed(self, samples: np.ndarray) -> list[VADEvent]:
        await asyncio.sleep(self._delay_s)
        return await self._stream.feed(samples)

    def reset(self) -> None:
        self._stream.reset()

    def close(self) -> None:
        self._stream.close()


def slow_vad(edge: EdgeServer, delay_s: float) -> None:
    """Make the edge's VAD slow for the sessions opened from now on."""
    services = edge.app.state.services
    services.vad_engine = SlowVADEngine(services.vad_engine, delay_s)


def metric_value(name: str, **labels: str) -> float:
    """A sample of the edge's Prometheus registry (shared by the edges of this process), 0 if absent."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
