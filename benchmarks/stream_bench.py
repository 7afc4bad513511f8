"""Streaming engine (Voxtral Realtime through vLLM's `/v1/realtime`): step lag, deltas, capacity.

`python -m benchmarks.stream_bench --vllm-url URL [--sessions 1,2,4] [--seconds 10]` against a vLLM
serving a realtime model (`python -m server.process.devmodel --realtime DIR --serve PORT` for the tiny one).
N sessions each stream `--seconds` of speech at 1x in 100 ms pieces through `StreamEngine`, all in
this process, as one item each. Per step, the lag is the time from the moment the audio that step
needs had been fed (`heard_end` plus vLLM's 2.5 ms look-ahead) to its delta arriving: vLLM's share
plus the WebSocket. A word's text then reaches the edge about the model's delay (480 ms) plus that
lag after it was spoken. CPU is this process's (the engines and the WebSocket clients) per second of
session audio. With `--turns-vllm-url` (the tiny Voxtral of the turn engine), the same audio is
also sent as one turn (`/v1/audio/transcriptions`, capped at `--turn-tokens`, about the words of
the audio): the time the turn engine's backend takes after the turn's end. Writes
`results/stream.{json,md,png}`.
"""

import argparse
import asyncio
import bisect
import os
import time
from dataclasses import dataclass, field

import numpy as np
import psutil

from benchmarks import results
from benchmarks.speech import recording
from server.backend.vllm_client import VLLMClient
from server.backend.vllm_realtime.probe import probe_realtime
from server.backend.vllm_realtime.stream import RealtimeStream, SegmentDone, StreamDelta, heard_end
from server.core.audio import SAMPLE_RATE, encode_wav
from server.core.settings import Settings

CHUNK = SAMPLE_RATE // 10
LOOK_AHEAD = 40
KEEPS_UP_P95_S = 1.0


@dataclass
class Session:
    fed_ends: list[int] = field(default_factory=list)
    fed_at: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    deltas: int = 0
    fed_all_at: float = 0.0
    done_at: float = 0.0
    error: str | None = None

    def on_delta(self, delta: StreamDelta) -> None:
        now = time.perf_counter()
        self.deltas += 1
        needed = heard_end(0, delta.step) + LOOK_AHEAD
        index = bisect.bisect_left(self.fed_ends, needed)
        if index < len(self.fed_at):  # steps of vLLM's right padding need no fed audio
            self.lags.append(now - self.fed_at[index])


async def run_session(url: str, model: str, max_model_len: int, audio: np.ndarray, delay_s: float) -> Session:
    session = Session()
    done = asyncio.Event()

    def finished(_: SegmentDone) -> None:
        session.done_at = time.perf_counter()
        done.set()

    def failed(exc: Exception) -> None:
        session.error = str(exc)
        done.set()

    stream = RealtimeStream(
        url, model, max_model_len=max_model_len, on_delta=session.on_delta, on_done=finished, on_error=failed
    )
    await asyncio.sleep(delay_s)
    stream.start_segment("item", 0)
    start = time.perf_counter()
    for i in range(0, len(audio), CHUNK):
        await asyncio.sleep(max(start + i / SAMPLE_RATE - time.perf_counter(), 0))
        stream.feed(audio[i : i + CHUNK])
        session.fed_ends.append(min(i + CHUNK, len(audio)))
        session.fed_at.append(time.perf_counter())
    session.fed_all_at = time.perf_counter()
    stream.end_segment()
    await done.wait()
    await stream.aclose()
    return session


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def measure(url: str, sessions: int, seconds: float) -> dict:
    backend = await probe_realtime(url)
    if backend is None:
        raise SystemExit(f"{url} serves no /v1/realtime")
    audio = np.resize(recording("jfk.flac"), int(seconds * SAMPLE_RATE))
    process = psutil.Process(os.getpid())
    cpu_before = sum(process.cpu_times()[:2])
    wall = time.perf_counter()
    runs = await asyncio.gather(
        *(run_session(backend.url, backend.model, backend.max_model_len, audio, i * 0.08) for i in range(sessions))
    )
    wall = time.perf_counter() - wall
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    lags = [lag for run in runs for lag in run.lags]
    p95 = percentile(lags, 95)
    return {
        "sessions": sessions,
        "audio_s": seconds,
        "errors": [run.error for run in runs if run.error],
        "lag_p50_s": percentile(lags, 50),
        "lag_p95_s": p95,
        "lag_max_s": max(lags) if lags else None,
        "deltas_per_s": sum(run.deltas for run in runs) / wall,
        "end_to_done_p50_s": percentile([run.done_at - run.fed_all_at for run in runs], 50),
        "client_cpu_per_session_s": cpu / (sessions * seconds),
        "keeps_up": not any(run.error for run in runs) and p95 is not None and p95 < KEEPS_UP_P95_S,
    }


async def turn_backend_s(url: str, seconds: float, tokens: int, repeats: int = 3) -> list[float]:
    """Seconds vLLM takes to transcribe the same audio as one turn, as the turn engine asks it."""
    settings = Settings(_env_file=None, vllm_url=url, max_output_tokens=tokens)  # type: ignore[call-arg]
    client = VLLMClient(settings)
    wav = encode_wav(np.resize(recording("jfk.flac"), int(seconds * SAMPLE_RATE)))
    try:
        model = (await client.models())["data"][0]["id"]
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            await client.transcribe(wav, task="transcribe", model=model, language=None, temperature=0.0)
            times.append(time.perf_counter() - start)
        return times
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-url", required=True)
    parser.add_argument("--sessions", default="1,2,4", help="comma-separated session counts")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--turns-vllm-url", help="a vLLM serving the turn engine's model, for comparison")
    parser.add_argument("--turn-tokens", type=int, default=32)
    args = parser.parse_args()
    points = [asyncio.run(measure(args.vllm_url, int(n), args.seconds)) for n in args.sessions.split(",")]
    turns = None
    if args.turns_vllm_url:
        turns = asyncio.run(turn_backend_s(args.turns_vllm_url, args.seconds, args.turn_tokens))
    rows = [
        [
            p["sessions"],
            len(p["errors"]),
            results.ms(p["lag_p50_s"]),
            results.ms(p["lag_p95_s"]),
            results.ms(p["lag_max_s"]),
            f"{p['deltas_per_s']:.1f}",
            results.ms(p["end_to_done_p50_s"]),
            f"{p['client_cpu_per_session_s'] * 1000:.1f}",
            "yes" if p["keeps_up"] else "no",
        ]
        for p in points
    ]
    table = results.markdown_table(
        [
            "sessions",
            "errors",
            "step lag p50 ms",
            "step lag p95 ms",
            "step lag max ms",
            "deltas / s",
            "audio end → done p50 ms",
            "client CPU ms / session-s",
            "keeps up (p95 < 1 s)",
        ],
        rows,
    )
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 3.5))
    counts = [p["sessions"] for p in points]
    for key, label in (("lag_p50_s", "p50"), ("lag_p95_s", "p95")):
        axes.plot(counts, [(p[key] or 0) * 1000 for p in points], marker="o", label=f"step lag {label}")
    axes.set_xlabel("concurrent sessions at 1x")
    axes.set_ylabel("ms")
    axes.legend()
    data = {
        "machine": results.machine(),
        "vllm": results.vllm_build(args.vllm_url),
        "points": points,
        "turn_backend_s": turns,
    }
    if turns:
        table += (
            f"\n\nTurn engine, same audio as one turn: vLLM answered in {results.ms(float(np.median(turns)))} ms p50"
        )
        table += f" ({len(turns)} requests, {args.turn_tokens} tokens)."
    print(table)
    print(results.write("stream", data, table, figure))


if __name__ == "__main__":
    main()
