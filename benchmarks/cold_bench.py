"""The cold cost: a fresh vLLM's first requests, with and without the edge's warm-up.

For each mode a new tiny vLLM is started (nothing of an earlier run is warm), then an edge with
`WARMUP_REQUESTS` 0 or the default; once `/ready` says ready (the warm-up's time is counted:
edge start → ready), a user's first requests are timed in order: one live session's turns (speech end → `completed`,
TTFS, 1x speech over the WebSocket; eager finals on, as shipped), then files
(`/v1/audio/transcriptions`, jfk.flac, one after another), then audio chats as a conversation
session sends them. With `--vllm-url` that vLLM is used instead (warm already: a
smoke run of the code, not a measurement).
"""

import asyncio
import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tqdm import tqdm

from benchmarks import processes, results
from benchmarks.realtime_client import SessionLog, append_message, run_session, score_session
from benchmarks.speech import SessionAudio
from benchmarks.webrtc_bench import wait_ready
from server.core.audio import decode_audio, encode_wav

FILE = processes.ROOT / "tests" / "data" / "jfk.flac"
REQUESTS = 4
CHUNK_MS = 20


@dataclass(frozen=True)
class Mode:
    name: str
    warmup_requests: int


MODES = (Mode("no warm-up", 0), Mode("warm-up (default)", 2))


def timed(call: Any) -> float:
    started = time.perf_counter()
    response = call()
    response.raise_for_status()
    return time.perf_counter() - started


def files(edge_url: str) -> list[float]:
    body = FILE.read_bytes()
    with httpx.Client(base_url=edge_url, timeout=300) as client:
        return [
            timed(lambda: client.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", body)}))
            for _ in range(REQUESTS)
        ]


def live_turns(edge_url: str) -> list[float]:
    audio = SessionAudio(CHUNK_MS, append_message)
    plan = audio.plan(20.0, seed=0)
    url = edge_url.replace("http", "ws", 1) + "/v1/realtime?intent=transcription"
    log = asyncio.run(run_session(url, plan, audio.messages, CHUNK_MS / 1000, 20.0, SessionLog()))
    if log.dropped:
        raise RuntimeError(f"the live session was dropped: {log.dropped}")
    return score_session(plan, log).latencies_s  # in the order spoken


def chats(edge_url: str) -> list[float]:
    clip = decode_audio(FILE, max_duration_s=60)[: 3 * 16000]
    data = base64.b64encode(encode_wav(clip)).decode()
    times = []
    with httpx.Client(base_url=edge_url, timeout=300) as client:
        for i in range(REQUESTS):
            content = [  # as a conversation session sends a turn: its instructions, then the audio
                {"type": "text", "text": f"Answer briefly ({i})."},
                {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
            ]
            body = {"model": "voxtral", "messages": [{"role": "user", "content": content}], "max_tokens": 8}
            times.append(timed(lambda body=body: client.post("/v1/chat/completions", json=body)))
    return times


@contextmanager
def fresh_vllm(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    with processes.tiny_vllm() as vllm_url:
        yield vllm_url


def measure(mode: Mode, given_vllm: str | None) -> dict[str, Any]:
    with fresh_vllm(given_vllm) as vllm_url:
        started = time.perf_counter()
        with processes.edge(vllm_url, warmup_requests=mode.warmup_requests) as edge:
            wait_ready(edge.url)
            ready_s = time.perf_counter() - started
            return {
                "mode": mode.name,
                "warmup_requests": mode.warmup_requests,
                "ready_s": ready_s,
                "live_ttfs_s": live_turns(edge.url),
                "file_s": files(edge.url),
                "chat_s": chats(edge.url),
            }


def _series(values: list[float]) -> str:
    return ", ".join(f"{v * 1000:.0f}" for v in values)


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "mode",
        "edge start → ready s",
        "files, in order (ms)",
        "live turns TTFS, in order (ms)",
        "audio chats, in order (ms)",
    ]
    body = [
        [
            r["mode"],
            f"{r['ready_s']:.1f}",
            _series(r["file_s"]),
            _series(r["live_ttfs_s"]),
            _series(r["chat_s"]),
        ]
        for r in rows
    ]
    return results.markdown_table(header, body)


def plot(rows: list[dict[str, Any]]):
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for axis, key, title in zip(
        axes, ("file_s", "live_ttfs_s", "chat_s"), ("files", "live turns", "audio chats"), strict=True
    ):
        for r in rows:
            axis.plot(range(1, len(r[key]) + 1), [v * 1000 for v in r[key]], marker="o", label=r["mode"])
        axis.set_title(title)
        axis.set_xlabel("request, in order")
        axis.set_ylabel("ms")
    axes[0].legend(fontsize=8)
    figure.suptitle("A fresh vLLM's first requests, with and without the warm-up")
    figure.tight_layout()
    return figure


def run(backend: str, given_vllm: str | None = None) -> None:
    rows = []
    for mode in MODES:
        row = measure(mode, given_vllm)
        rows.append(row)
        tqdm.write(
            f"  {mode.name}: ready {row['ready_s']:.1f} s, files {_series(row['file_s'])} ms, "
            f"live {_series(row['live_ttfs_s'])} ms, chats {_series(row['chat_s'])} ms"
        )
    data = {"benchmark": "cold", "machine": results.machine(), "backend": backend, "rows": rows}
    results.write("cold", data, table(rows), plot(rows))
    tqdm.write(table(rows))
