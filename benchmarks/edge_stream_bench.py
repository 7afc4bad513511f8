"""Live sessions end to end through the edge: the streaming engine against the turn engine.

`python -m benchmarks.edge_stream_bench --realtime-vllm-url URL --turns-vllm-url URL [--sessions 1,2]
[--seconds 8]`: the first vLLM serves a realtime model (`python -m server.process.devmodel DIR --realtime
--serve PORT`), the second the turn engine's Voxtral (`python -m server.process.devmodel DIR --serve PORT`).
For each engine an edge runs as a child process (`REALTIME_ENGINE=stream` with
`REALTIME_VLLM_URL`, or `turns`); N clients each open a GA `/v1/realtime` session without turn
detection, send `--seconds` of speech at 1x in 100 ms pieces and commit it as one item.

Per streamed delta (its extension field `audio_end_ms` says where the audio its text stands for
ends): the time from the moment that audio was sent to the delta's arrival at the client, and the
step lag: from the moment the audio its step needed (that plus the model's 480 ms delay and vLLM's
2.5 ms look-ahead) was sent to the delta. The same N sessions straight to vLLM
(`stream_bench.measure`, no edge) give vLLM's own step lag; the difference of the medians is the
edge's share. For the turn engine the text comes only after the commit: the last word waits from
the end of the audio to `.completed`, the first word the audio's length more. CPU is the edge
process's, per second of session audio.
Writes `results/edge_stream.{json,md,png}`.
"""

import argparse
import asyncio
import base64
import bisect
import json
import time
from dataclasses import dataclass, field

import numpy as np
import websockets

from benchmarks import processes, results
from benchmarks.procstats import ProcessMeter
from benchmarks.speech import recording
from benchmarks.stream_bench import measure as measure_vllm
from server.backend.vllm_realtime.protocol import STEP_SAMPLES
from server.backend.vllm_realtime.stream import DELAY_STEPS
from server.core.audio import SAMPLE_RATE

CHUNK = SAMPLE_RATE // 10
LOOK_AHEAD = 40
TRANSCRIPTION = "conversation.item.input_audio_transcription"
KEEPS_UP_P95_S = 1.0


@dataclass
class Client:
    """What one session sent and received, with times (perf_counter)."""

    fed_ends: list[int] = field(default_factory=list)
    fed_at: list[float] = field(default_factory=list)
    deltas: list[tuple[float, int]] = field(default_factory=list)  # arrival, audio_end_ms
    completed: dict | None = None
    completed_at: float = 0.0
    error: str | None = None

    def sent_at(self, position: int) -> float | None:
        """When the audio up to `position` (16 kHz samples) had been sent."""
        index = bisect.bisect_left(self.fed_ends, position)
        return self.fed_at[index] if index < len(self.fed_at) else None

    def lags(self, audio_samples: int) -> tuple[list[float], list[float]]:
        """Per delta: its audio sent → its arrival, and step lag (the audio its step needed sent → arrival).

        A streamed delta's `audio_end_ms` (extension) is where the audio its text stands for ends."""
        spoken, step = [], []
        for arrival, end_ms in self.deltas:
            end = end_ms * SAMPLE_RATE // 1000
            if not 0 < end < audio_samples - CHUNK:  # the padding's steps
                continue
            said_at = self.sent_at(end)
            needed_at = self.sent_at(end + DELAY_STEPS * STEP_SAMPLES + LOOK_AHEAD)
            if said_at is not None:
                spoken.append(arrival - said_at)
            if needed_at is not None:
                step.append(arrival - needed_at)
        return spoken, step


async def run_client(url: str, audio: np.ndarray, delay_s: float) -> Client:
    client = Client()
    await asyncio.sleep(delay_s)
    ws_url = url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    audio_input = {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "turn_detection": None}
    session = {"type": "transcription", "audio": {"input": audio_input}}
    try:
        async with websockets.connect(ws_url, max_size=None) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "session.update", "session": session}))
            await ws.recv()
            reader = asyncio.create_task(read(ws, client))
            pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
            start = time.perf_counter()
            for i in range(0, len(audio), CHUNK):
                await asyncio.sleep(max(start + i / SAMPLE_RATE - time.perf_counter(), 0))
                piece = base64.b64encode(pcm[2 * i : 2 * (i + CHUNK)]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
                client.fed_ends.append(min(i + CHUNK, len(audio)))
                client.fed_at.append(time.perf_counter())
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await asyncio.wait_for(reader, 120)
    except Exception as exc:  # a failed session is counted, not fatal to the benchmark
        client.error = repr(exc)
    return client


async def read(ws: websockets.ClientConnection, client: Client) -> None:
    while True:
        event = json.loads(await ws.recv())
        now = time.perf_counter()
        if event["type"] == f"{TRANSCRIPTION}.delta":
            client.deltas.append((now, event.get("audio_end_ms", -1)))
        elif event["type"] == f"{TRANSCRIPTION}.completed":
            client.completed, client.completed_at = event, now
            return
        elif event["type"] in ("error", f"{TRANSCRIPTION}.failed"):
            client.error = json.dumps(event.get("error"))
            return


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def measure_edge(edge_url: str, pid: int, sessions: int, seconds: float) -> dict:
    audio = np.resize(recording("jfk.flac"), int(seconds * SAMPLE_RATE))
    with ProcessMeter(pid) as meter:
        wall = time.perf_counter()
        clients = await asyncio.gather(*(run_client(edge_url, audio, i * 0.08) for i in range(sessions)))
        wall = time.perf_counter() - wall
    spoken, step = [], []
    for client in clients:
        s, k = client.lags(len(audio))
        spoken += s
        step += k
    done = [c.completed_at - c.fed_at[-1] for c in clients if c.completed is not None and c.fed_at]
    return {
        "sessions": sessions,
        "audio_s": seconds,
        "errors": [c.error for c in clients if c.error],
        "word_to_delta_p50_s": percentile(spoken, 50),
        "word_to_delta_p95_s": percentile(spoken, 95),
        "step_lag_p50_s": percentile(step, 50),
        "step_lag_p95_s": percentile(step, 95),
        "deltas_per_s": sum(len(c.deltas) for c in clients) / wall,
        "end_to_completed_p50_s": percentile(done, 50),
        "edge_cpu_ms_per_session_s": meter.cpu_s * 1000 / (sessions * seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realtime-vllm-url", required=True)
    parser.add_argument("--turns-vllm-url", required=True)
    parser.add_argument("--sessions", default="1,2", help="comma-separated session counts")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    counts = [int(n) for n in args.sessions.split(",")]
    points: dict[str, list[dict]] = {}
    engines = {
        "stream": dict(realtime_vllm_url=args.realtime_vllm_url + "/v1", realtime_engine="stream"),
        "turns": dict(realtime_engine="turns"),
    }
    for engine, settings in engines.items():
        with processes.edge(args.turns_vllm_url, **settings) as edge:
            points[engine] = [asyncio.run(measure_edge(edge.url, edge.pid, n, args.seconds)) for n in counts]
    direct = [asyncio.run(measure_vllm(args.realtime_vllm_url, n, args.seconds)) for n in counts]
    rows = []
    for n, stream, turns, vllm in zip(counts, points["stream"], points["turns"], direct, strict=True):
        share = None
        if stream["step_lag_p50_s"] is not None and vllm["lag_p50_s"] is not None:
            share = stream["step_lag_p50_s"] - vllm["lag_p50_s"]
        stream["vllm_step_lag_p50_s"], stream["edge_share_p50_s"] = vllm["lag_p50_s"], share
        stream["keeps_up"] = not stream["errors"] and (stream["step_lag_p95_s"] or 99) < KEEPS_UP_P95_S
        last = turns["end_to_completed_p50_s"]
        rows.append(
            [
                n,
                f"{len(stream['errors'])} / {len(turns['errors'])}",
                f"{results.ms(stream['word_to_delta_p50_s'])} / {results.ms(stream['word_to_delta_p95_s'])}",
                f"{results.ms(last)} … {results.ms(None if last is None else last + args.seconds)}",
                f"{results.ms(stream['step_lag_p50_s'])} / {results.ms(vllm['lag_p50_s'])} / {results.ms(share)}",
                f"{stream['deltas_per_s']:.1f} / {turns['deltas_per_s']:.1f}",
                f"{stream['edge_cpu_ms_per_session_s']:.1f} / {turns['edge_cpu_ms_per_session_s']:.1f}",
                "yes" if stream["keeps_up"] else "no",
            ]
        )
    table = results.markdown_table(
        [
            "sessions at 1x",
            "errors stream / turns",
            "stream: word → delta p50 / p95 ms",
            "turns: word → text ms (last … first word)",
            "step lag p50 ms: via edge / vLLM alone / edge's share",
            "text events / s: stream / turns",
            "edge CPU ms / session-s: stream / turns",
            "stream keeps up (p95 step lag < 1 s)",
        ],
        rows,
    )
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 3.5))
    axes.plot(counts, [(p["word_to_delta_p50_s"] or 0) * 1000 for p in points["stream"]], marker="o", label="stream")
    axes.plot(counts, [(p["end_to_completed_p50_s"] or 0) * 1000 for p in points["turns"]], marker="o", label="turns")
    axes.set_xlabel("concurrent sessions at 1x")
    axes.set_ylabel("ms, word (last word for turns) → text")
    axes.legend()
    data = {
        "machine": results.machine(),
        "vllm": results.vllm_build(args.realtime_vllm_url),
        "points": points,
        "vllm_alone": direct,
    }
    print(table)
    print(results.write("edge_stream", data, table, figure))


if __name__ == "__main__":
    main()
