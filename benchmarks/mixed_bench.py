"""Mixed load at the shipped defaults: live realtime sessions at 1x, alone and while long files are
transcribed back to back through the same edge, and the files alone.

One edge per mode, three runs in it, interleaved so that a machine shared with others loads them
alike: the sessions alone; the same sessions (same seed, same audio) with `--mixed-files` files of
`--file-seconds` POSTed one after the other from the sessions' start; the files alone for as long
as the second run lasted. Compared: each turn's `speech_stopped` → `…transcription.completed`
time over the turns whose `speech_stopped` came after the first file's first text (its chunks were
at vLLM by then; its decoding and VAD come before), the same window in the run alone; the turns
completed; and the files' text rate (deltas per second from their first text) with and without the
sessions. Goal: p99 with the files within 1.25x of alone (+50 ms), every turn completed.

Modes: the shipped defaults (the file budget shrinks to `MAX_FILE_BACKEND_REQUESTS_LIVE` while
sessions are open), and the same edge with the adaptive budget off
(`MAX_FILE_BACKEND_REQUESTS_LIVE` = `MAX_FILE_BACKEND_REQUESTS`, the edge before it). Where the
time goes is read from vLLM's and the edge's `/metrics` between the start and end of each run:
vLLM's queue, prefill and decode time per request, the edge's share of each turn, its decode and
VAD time, and the CPU of each process.
"""

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
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
from benchmarks.stats import Metrics, counter_delta, percentiles, scrape
from server.core.settings import Settings

GOAL_RATIO = 1.25
GOAL_SLACK_S = 0.05
VLLM_HISTOGRAMS = (
    "vllm:request_queue_time_seconds",
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
    "vllm:e2e_request_latency_seconds",
)


@dataclass(frozen=True)
class Mode:
    name: str
    edge_settings: dict[str, int] = field(default_factory=dict)


def modes() -> list[Mode]:
    full = Settings().max_file_backend_requests
    return [Mode("shipped defaults"), Mode("adaptive budget off", {"max_file_backend_requests_live": full})]


class Scrapes:
    """vLLM's and the edge's metrics at the start of a run, for what changed by its end."""

    def __init__(self, edge_url: str, vllm_url: str) -> None:
        self.edge_url, self.vllm_url = edge_url, vllm_url
        self.edge, self.vllm = scrape(edge_url), scrape(vllm_url)

    def summary(self) -> dict[str, Any]:
        edge, vllm = scrape(self.edge_url), scrape(self.vllm_url)
        out: dict[str, Any] = {
            "vllm_requests": counter_delta(self.vllm, vllm, "vllm:e2e_request_latency_seconds_count")
        }
        for name in VLLM_HISTOGRAMS:
            out[name.removeprefix("vllm:").removesuffix("_seconds") + "_mean_s"] = _mean(self.vllm, vllm, name)
        for part in ("total", "edge", "backend"):
            out[f"edge_turn_{part}_mean_s"] = _mean(self.edge, edge, "edge_realtime_turn_seconds", part=part)
        for stage in ("decode", "vad"):
            out[f"edge_file_{stage}_s"] = round(
                counter_delta(self.edge, edge, "edge_stage_seconds_sum", stage=stage), 3
            )
        return out


def _mean(before: Metrics, after: Metrics, name: str, **labels: str) -> float | None:
    count = counter_delta(before, after, f"{name}_count", **labels)
    return round(counter_delta(before, after, f"{name}_sum", **labels) / count, 4) if count else None


def live_run(
    edge_url: str,
    vllm_url: str,
    sessions: int,
    config: realtime_bench.LoadConfig,
    pids: dict[str, int],
    files: tuple[float, int] | None,
) -> dict[str, Any]:
    """One run of the sessions; with `files` (seconds, count), that many files back to back from the start."""
    audio = SessionAudio(config.chunk_ms, append_message)
    ws_url = edge_url.replace("http", "ws", 1) + "/v1/realtime"
    meters = {name: ProcessMeter(pid, children=pid != os.getpid()) for name, pid in pids.items()}
    scrapes = Scrapes(edge_url, vllm_url)
    background = BackgroundFile(edge_url, files[0], count=files[1]) if files else None
    started = time.perf_counter()
    with ExitStack() as stack:
        for meter in meters.values():
            stack.enter_context(meter)
        logs = asyncio.run(realtime_bench.run_sessions(ws_url, sessions, audio, config, seed=0))
    wall_s = time.perf_counter() - started
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
        "wall_s": round(wall_s, 2),
        "turns_expected": expected,
        "turns_completed": len(turns),
        "turns_missed": expected - matched,
        "turns_failed": sum(s.failed for s in scores),
        "sessions_dropped": sum(1 for _, log in logs if log.dropped),
        "turn_latency_s": percentiles([v for s in scores for v in s.latencies_s]),
        "stopped_to_completed_s": percentiles([value for _, value in turns]),
        "turns_stopped_at_s_and_stopped_to_completed_s": turns,
        "file_first_text_at_s": file_from_s,
        "file": file_outcome,
        "metrics": scrapes.summary(),
        "processes": {name: meter.summary() for name, meter in meters.items()},
    }


def files_alone(
    edge_url: str, vllm_url: str, files: tuple[float, int], seconds: float, pids: dict[str, int]
) -> dict[str, Any]:
    """The files with no live session, for `seconds`."""
    meters = {name: ProcessMeter(pid) for name, pid in pids.items() if pid != os.getpid()}
    scrapes = Scrapes(edge_url, vllm_url)
    with ExitStack() as stack:
        for meter in meters.values():
            stack.enter_context(meter)
        background = BackgroundFile(edge_url, files[0], count=files[1])
        time.sleep(seconds)
        outcome = background.stop()
    return {
        "file": outcome,
        "metrics": scrapes.summary(),
        "processes": {name: meter.summary() for name, meter in meters.items()},
    }


def window(run: dict[str, Any], from_s: float) -> dict[str, Any]:
    """`speech_stopped` → completed of the turns stopped `from_s` or later into the run."""
    values = [value for at, value in run["turns_stopped_at_s_and_stopped_to_completed_s"] if at >= from_s]
    return {"from_s": round(from_s, 2), "turns": len(values), **percentiles(values)}


def ratio(with_file: dict[str, Any], alone: dict[str, Any], q: str = "p99") -> float | None:
    a, b = alone[q], with_file[q]
    return None if not a or b is None else round(b / a, 2)


def goal_met(during: dict[str, Any], alone: dict[str, Any], run: dict[str, Any]) -> bool:
    if during["p99"] is None or alone["p99"] is None:
        return False
    every_turn = run["turns_completed"] == run["turns_expected"] and run["turns_missed"] == 0
    return during["p99"] <= GOAL_RATIO * alone["p99"] + GOAL_SLACK_S and every_turn


@contextmanager
def _vllm(vllm_url: str | None) -> Iterator[tuple[str, dict[str, int]]]:
    """An external vLLM, or the tiny one as `./serve.sh` starts it (`--scheduling-policy priority`)."""
    if vllm_url:
        yield vllm_url, {}
        return
    with processes.tiny_vllm(scheduling_policy="priority") as url:
        pid = processes.child_listening_on(int(url.rsplit(":", 1)[1]))
        yield url, ({"vllm": pid} if pid is not None else {})


def run(
    vllm_url: str | None,
    sessions: int,
    config: realtime_bench.LoadConfig,
    long_seconds: float,
    file_count: int,
    backend: str,
) -> dict[str, Any]:
    """Both modes against one vLLM (`vllm_url`, or a tiny one started here)."""
    long_file(long_seconds, processes.WORK)  # written once, before anything is timed
    files = (long_seconds, file_count)
    rows = []
    with _vllm(vllm_url) as (url, vllm_pids):
        for mode in modes():
            tqdm.write(
                f"  {mode.name}: {sessions} sessions alone, with {file_count} × {long_seconds / 60:.0f} min"
                " files, files alone"
            )
            with processes.edge(url, **mode.edge_settings) as edge:
                pids = {**vllm_pids, "edge": edge.pid, "load_generator": os.getpid()}
                alone = live_run(edge.url, url, sessions, config, pids, None)
                with_file = live_run(edge.url, url, sessions, config, pids, files)
                only_files = files_alone(edge.url, url, files, with_file["wall_s"], pids)
            from_s = with_file["file_first_text_at_s"] or config.ramp_s + config.seconds / 2
            during, same_window_alone = window(with_file, from_s), window(alone, from_s)
            row = {
                "mode": asdict(mode),
                "alone": alone,
                "with_file": with_file,
                "files_alone": only_files,
                "window_alone": same_window_alone,
                "window_with_file": during,
                "window_p99_ratio": ratio(during, same_window_alone),
                "turn_latency_p99_ratio": ratio(with_file["turn_latency_s"], alone["turn_latency_s"]),
                "file_rate_ratio": _rate_ratio(with_file["file"], only_files["file"]),
                "goal_met": goal_met(during, same_window_alone, with_file),
            }
            rows.append(row)
            tqdm.write(table([row]))
            tqdm.write(metrics_table([row]))
    data = {
        "benchmark": "mixed",
        "machine": results.machine(),
        "backend": backend,
        "sessions": sessions,
        "load": asdict(config),
        "long_file_s": long_seconds,
        "files": file_count,
        "goal": f"speech_stopped → completed p99 with the files ≤ {GOAL_RATIO}x alone + {GOAL_SLACK_S * 1000:.0f} ms "
        "(same window), every turn completed",
        "rows": rows,
    }
    results.write("mixed", data, table(rows) + "\n\n" + metrics_table(rows), plot(rows))
    return data


def _rate_ratio(with_live: dict[str, Any] | None, alone: dict[str, Any]) -> float | None:
    a, b = alone.get("deltas_per_s"), (with_live or {}).get("deltas_per_s")
    return None if not a or b is None else round(b / a, 2)


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "mode",
        "window from s (turns alone / with files)",
        "stopped→completed p50 / p99 ms, alone",
        "… with the files",
        "p99 ratio",
        "goal met",
        "turns completed alone / with files",
        "file deltas / s with sessions / alone (ratio)",
        "edge CPU cores with files",
    ]
    lines = []
    for row in rows:
        alone, mixed = row["alone"], row["with_file"]
        during = row["window_with_file"]
        rate_ratio = row["file_rate_ratio"] if row["file_rate_ratio"] is not None else "–"
        rates = (
            f"{(mixed['file'] or {}).get('deltas_per_s', '–')} / {row['files_alone']['file'].get('deltas_per_s', '–')}"
        )
        lines.append(
            [
                row["mode"]["name"],
                f"{during['from_s']} ({row['window_alone']['turns']} / {during['turns']})",
                f"{results.ms(row['window_alone']['p50'])} / {results.ms(row['window_alone']['p99'])}",
                f"{results.ms(during['p50'])} / {results.ms(during['p99'])}",
                row["window_p99_ratio"] if row["window_p99_ratio"] is not None else "–",
                "yes" if row["goal_met"] else "no",
                f"{alone['turns_completed']}/{alone['turns_expected']}"
                f" / {mixed['turns_completed']}/{mixed['turns_expected']}",
                f"{rates} ({rate_ratio})",
                mixed["processes"].get("edge", {}).get("cpu_cores", "–"),
            ]
        )
    return results.markdown_table(header, lines)


def metrics_table(rows: list[dict[str, Any]]) -> str:
    """Where the time went, per run: vLLM's mean per-request stages, the edge's part of a turn, its
    file decode and VAD time, and the CPU of vLLM and the edge."""
    header = [
        "mode, run",
        "vLLM requests",
        "vLLM queue / prefill / decode / e2e mean ms",
        "edge turn total / edge part / backend part mean ms",
        "edge file decode / VAD s",
        "CPU cores vLLM / edge",
    ]
    lines = []
    for row in rows:
        for run_name in ("alone", "with_file", "files_alone"):
            run = row[run_name]
            m = run["metrics"]
            stages = " / ".join(
                results.ms(m[f"request_{s}_mean_s"]) for s in ("queue_time", "prefill_time", "decode_time")
            )
            turn = " / ".join(results.ms(m[f"edge_turn_{p}_mean_s"]) for p in ("total", "edge", "backend"))
            procs = run["processes"]
            lines.append(
                [
                    f"{row['mode']['name']}, {run_name.replace('_', ' ')}",
                    int(m["vllm_requests"]),
                    f"{stages} / {results.ms(m['e2e_request_latency_mean_s'])}",
                    turn,
                    f"{m['edge_file_decode_s']} / {m['edge_file_vad_s']}",
                    f"{procs.get('vllm', {}).get('cpu_cores', '–')} / {procs.get('edge', {}).get('cpu_cores', '–')}",
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
    axis.set_ylabel("speech_stopped → completed, ms (while the files run)")
    axis.set_title("Live turns with long files through the same edge")
    axis.legend(fontsize=8)
    return figure
