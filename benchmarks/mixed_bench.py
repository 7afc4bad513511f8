"""Mixed load: live realtime sessions at 1x, alone and with a long file submitted halfway through.

The same sessions (same seed, same audio) run twice against one edge: alone, then with a long
file POSTed through the edge when half of the session time has passed. Compared: each turn's
`speech_stopped` → `…transcription.completed` time over the turns whose `speech_stopped` arrived
after the file's first text came back (its chunks were at vLLM by then; the file's decoding and
VAD come before), in both runs the same window from the start, and the turn latency over all
turns. Both runs happen twice: with "live first" on (vLLM started with `--scheduling-policy
priority`, the edge's `MAX_FILE_BACKEND_REQUESTS` at `--file-budget`) and off (vLLM's default
first-come queue, no global file budget: the edge before this change, where each file has
`MAX_CHUNK_CONCURRENCY` chunks at vLLM). Goal: p99 with the file within 1.25x of alone.

vLLM's transcription endpoint takes no priority, so for these transcription-only sessions the
scheduling policy changes nothing: the file budget is what keeps vLLM's batch free for them.
"""

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tqdm import tqdm

from benchmarks import processes, realtime_bench, results
from benchmarks.background_file import BackgroundFile
from benchmarks.procstats import ProcessMeter
from benchmarks.realtime_client import append_message, score_session
from benchmarks.speech import SessionAudio, long_file
from benchmarks.stats import percentiles

NO_BUDGET = 1_000_000
GOAL_RATIO = 1.25


@dataclass(frozen=True)
class Mode:
    name: str
    scheduling_policy: str
    file_budget: int


def modes(file_budget: int) -> list[Mode]:
    return [Mode("live first on", "priority", file_budget), Mode("live first off", "fcfs", NO_BUDGET)]


def live_run(
    edge_url: str, sessions: int, config: realtime_bench.LoadConfig, pids: dict[str, int], long_seconds: float | None
) -> dict[str, Any]:
    """One run of the sessions; with `long_seconds`, a file of that length is submitted halfway."""
    audio = SessionAudio(config.chunk_ms, append_message)
    ws_url = edge_url.replace("http", "ws", 1) + "/v1/realtime"
    half_s = config.ramp_s + config.seconds / 2
    meters = {name: ProcessMeter(pid, children=pid != os.getpid()) for name, pid in pids.items()}
    background = BackgroundFile(edge_url, long_seconds, delay_s=half_s) if long_seconds else None
    started = time.perf_counter()
    with ExitStack() as stack:
        for meter in meters.values():
            stack.enter_context(meter)
        logs = asyncio.run(realtime_bench.run_sessions(ws_url, sessions, audio, config, seed=0))
    file_outcome = background.stop() if background else None
    turns = [
        (stopped_at - started, log.completed[item] - stopped_at)
        for _, log in logs
        for item, (_, stopped_at) in log.stopped.items()
        if item in log.completed
    ]
    file_from_s = None
    if background is not None and background.first_delta_at is not None:
        file_from_s = background.first_delta_at - started
    scores = [score_session(plan, log, config.chunk_ms / 1000) for plan, log in logs]
    expected = sum(s.expected for s in scores)
    matched = sum(s.matched for s in scores)
    return {
        "turns_expected": expected,
        "turns_missed": expected - matched,
        "turns_failed": sum(s.failed for s in scores),
        "sessions_dropped": sum(1 for _, log in logs if log.dropped),
        "turn_latency_s": percentiles([v for s in scores for v in s.latencies_s]),
        "stopped_to_completed_s": percentiles([value for _, value in turns]),
        "turns_stopped_at_s_and_stopped_to_completed_s": turns,
        "file_first_text_at_s": file_from_s,
        "file": file_outcome,
        "processes": {name: meter.summary() for name, meter in meters.items()},
    }


def window(run: dict[str, Any], from_s: float) -> dict[str, Any]:
    """`speech_stopped` → completed of the turns stopped `from_s` or later into the run."""
    values = [value for at, value in run["turns_stopped_at_s_and_stopped_to_completed_s"] if at >= from_s]
    return {"from_s": round(from_s, 2), "turns": len(values), **percentiles(values)}


def ratio(with_file: dict[str, Any], alone: dict[str, Any], q: str = "p99") -> float | None:
    a, b = alone[q], with_file[q]
    return None if not a or b is None else round(b / a, 2)


@contextmanager
def _vllm(vllm_url: str | None, policy: str) -> Iterator[tuple[str, dict[str, int]]]:
    if vllm_url:
        yield vllm_url, {}
        return
    with processes.tiny_vllm(scheduling_policy=policy) as url:
        pid = processes.child_listening_on(int(url.rsplit(":", 1)[1]))
        yield url, ({"vllm": pid} if pid is not None else {})


def run(
    vllm_url: str | None,
    sessions: int,
    config: realtime_bench.LoadConfig,
    long_seconds: float,
    file_budget: int,
    backend: str,
) -> dict[str, Any]:
    """Both modes; `vllm_url` (a vLLM already running, policy as it was started) or a fresh tiny
    vLLM per mode."""
    long_file(long_seconds, processes.WORK)  # written once, before anything is timed
    rows = []
    for mode in modes(file_budget):
        tqdm.write(f"  {mode.name}: {sessions} sessions alone, then with a {long_seconds / 60:.0f} min file")
        with _vllm(vllm_url, mode.scheduling_policy) as (url, pids):
            with processes.edge(url, max_file_backend_requests=mode.file_budget) as edge:
                pids = {**pids, "edge": edge.pid, "load_generator": os.getpid()}
                alone = live_run(edge.url, sessions, config, pids, None)
                with_file = live_run(edge.url, sessions, config, pids, long_seconds)
        # From the file's first text (or halfway, if none came back during the sessions).
        from_s = with_file["file_first_text_at_s"] or config.ramp_s + config.seconds / 2
        during, same_window_alone = window(with_file, from_s), window(alone, from_s)
        row = {
            "mode": asdict(mode),
            "vllm_policy": mode.scheduling_policy if vllm_url is None else "as started (external vLLM)",
            "alone": alone,
            "with_file": with_file,
            "window_alone": same_window_alone,
            "window_with_file": during,
            "window_p99_ratio": ratio(during, same_window_alone),
            "turn_latency_p99_ratio": ratio(with_file["turn_latency_s"], alone["turn_latency_s"]),
        }
        rows.append(row)
        tqdm.write(table([row]))
    data = {
        "benchmark": "mixed",
        "machine": results.machine(),
        "backend": backend,
        "sessions": sessions,
        "load": asdict(config),
        "long_file_s": long_seconds,
        "goal": f"speech_stopped → completed p99 while the file runs ≤ {GOAL_RATIO}x alone (same window)",
        "rows": rows,
    }
    results.write("mixed", data, table(rows), plot(rows))
    return data


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "mode",
        "window from s (turns)",
        "stopped→completed p50 / p99 ms, alone",
        "… with the file",
        "p99 ratio",
        "turn latency p99 ms alone / with file",
        "turns missed alone / with file",
        "file deltas received",
        "edge CPU cores with file",
    ]
    lines = []
    for row in rows:
        alone, mixed = row["alone"], row["with_file"]
        budget = row["mode"]["file_budget"]
        during = row["window_with_file"]
        lines.append(
            [
                row["mode"]["name"] + ("" if budget == NO_BUDGET else f" (budget {budget})"),
                f"{during['from_s']} ({row['window_alone']['turns']} / {during['turns']})",
                f"{results.ms(row['window_alone']['p50'])} / {results.ms(row['window_alone']['p99'])}",
                f"{results.ms(row['window_with_file']['p50'])} / {results.ms(row['window_with_file']['p99'])}",
                row["window_p99_ratio"] if row["window_p99_ratio"] is not None else "–",
                f"{results.ms(alone['turn_latency_s']['p99'])} / {results.ms(mixed['turn_latency_s']['p99'])}",
                f"{alone['turns_missed']} / {mixed['turns_missed']}",
                (mixed["file"] or {}).get("deltas_received", "–"),
                mixed["processes"].get("edge", {}).get("cpu_cores", "–"),
            ]
        )
    return results.markdown_table(header, lines)


def plot(rows: list[dict[str, Any]]):
    figure, axis = plt.subplots(figsize=(8, 4.5))
    labels = [row["mode"]["name"] for row in rows]
    x = range(len(rows))
    bars = [("window_alone", "p50"), ("window_alone", "p99"), ("window_with_file", "p50"), ("window_with_file", "p99")]
    for offset, (key, q) in zip((-0.3, -0.1, 0.1, 0.3), bars, strict=False):
        values = [(row[key][q] or float("nan")) * 1000 for row in rows]
        axis.bar([i + offset for i in x], values, 0.2, label=f"{key.removeprefix('window_').replace('_', ' ')} {q}")
    axis.set_xticks(list(x), labels)
    axis.set_ylabel("speech_stopped → completed, ms (while the file runs)")
    axis.set_title("Live turns with a long file submitted halfway")
    axis.legend(fontsize=8)
    return figure
