"""Mixed load: live realtime sessions at 1x, alone and with a long file submitted halfway through.

The same sessions (same seed, same audio) run twice against one edge: alone, then with a long
file POSTed through the edge when half of the session time has passed. Compared: each turn's
`speech_stopped` → `…transcription.completed` time, over the turns whose `speech_stopped`
arrived in the second half (while the file was in progress, in the second run), and the turn
latency over all turns. Both runs happen twice: with "live first" on (vLLM started with
`--scheduling-policy priority`, the edge's `MAX_FILE_BACKEND_REQUESTS` at `--file-budget`) and
off (vLLM's default first-come queue, no global file budget: the edge before this change, where
each file has `MAX_CHUNK_CONCURRENCY` chunks at vLLM). Goal: p99 with the file within 1.25x of alone.
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
    second_half, everything = [], []
    for _, log in logs:
        for item, (_, stopped_at) in log.stopped.items():
            if item in log.completed:
                everything.append(log.completed[item] - stopped_at)
                if stopped_at >= started + half_s:
                    second_half.append(log.completed[item] - stopped_at)
    scores = [score_session(plan, log, config.chunk_ms / 1000) for plan, log in logs]
    expected = sum(s.expected for s in scores)
    matched = sum(s.matched for s in scores)
    return {
        "turns_expected": expected,
        "turns_missed": expected - matched,
        "turns_failed": sum(s.failed for s in scores),
        "sessions_dropped": sum(1 for _, log in logs if log.dropped),
        "turn_latency_s": percentiles([v for s in scores for v in s.latencies_s]),
        "stopped_to_completed_s": percentiles(everything),
        "second_half_turns": len(second_half),
        "second_half_stopped_to_completed_s": percentiles(second_half),
        "file": file_outcome,
        "processes": {name: meter.summary() for name, meter in meters.items()},
    }


def ratio(with_file: dict[str, Any], alone: dict[str, Any], key: str, q: str) -> float | None:
    a, b = alone[key][q], with_file[key][q]
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
        row = {
            "mode": asdict(mode),
            "vllm_policy": mode.scheduling_policy if vllm_url is None else "as started (external vLLM)",
            "alone": alone,
            "with_file": with_file,
            "second_half_p99_ratio": ratio(with_file, alone, "second_half_stopped_to_completed_s", "p99"),
            "turn_latency_p99_ratio": ratio(with_file, alone, "turn_latency_s", "p99"),
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
        "goal": f"second-half speech_stopped → completed p99 with the file ≤ {GOAL_RATIO}x alone",
        "rows": rows,
    }
    results.write("mixed", data, table(rows), plot(rows))
    return data


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "mode",
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
        key = "second_half_stopped_to_completed_s"
        lines.append(
            [
                row["mode"]["name"]
                + ("" if row["mode"]["file_budget"] == NO_BUDGET else f" (budget {row['mode']['file_budget']})"),
                f"{results.ms(alone[key]['p50'])} / {results.ms(alone[key]['p99'])}",
                f"{results.ms(mixed[key]['p50'])} / {results.ms(mixed[key]['p99'])}",
                row["second_half_p99_ratio"] if row["second_half_p99_ratio"] is not None else "–",
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
    key = "second_half_stopped_to_completed_s"
    x = range(len(rows))
    for offset, (run, label) in zip(
        (-0.3, -0.1, 0.1, 0.3),
        [("alone", "p50"), ("alone", "p99"), ("with_file", "p50"), ("with_file", "p99")],
        strict=False,
    ):
        values = [(row[run][key][label] or float("nan")) * 1000 for row in rows]
        axis.bar([i + offset for i in x], values, 0.2, label=f"{run.replace('_', ' ')} {label}")
    axis.set_xticks(list(x), labels)
    axis.set_ylabel("speech_stopped → completed, ms (second half)")
    axis.set_title("Live turns with a long file submitted halfway")
    axis.legend(fontsize=8)
    return figure
