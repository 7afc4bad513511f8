"""Mixed load at the shipped defaults: live realtime sessions at 1x, alone and while long files are
transcribed back to back through the same edge, and the files alone.

One edge per mode, both started at once against one vLLM, three runs in each: the sessions
alone; the same sessions (same seed, same audio) while
`--mixed-files` files of `--file-seconds` are transcribed one after the other (POSTed first, the
sessions start when the first file's first text is back: its chunks are at vLLM); the files alone,
measured for as long as the sessions lasted. On a machine shared with others the runs are
ordered so that drift in their load falls alike on both modes: alone A, alone B, with files B,
with files A, files alone A, files alone B. Compared: each turn's `speech_stopped` →
`…transcription.completed` time, alone and with the files; the turns completed; and the files'
text rate (deltas per second) while the sessions ran and alone. Goal: p99 with the files within
1.25x of alone (+50 ms), every turn completed.

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
    """One run of the sessions; with `files` (seconds, count), while that many files run back to back."""
    audio = SessionAudio(config.chunk_ms, append_message)
    ws_url = edge_url.replace("http", "ws", 1) + "/v1/realtime"
    meters = {name: ProcessMeter(pid, children=pid != os.getpid()) for name, pid in pids.items()}
    background = started_files(edge_url, files) if files else None
    scrapes = Scrapes(edge_url, vllm_url)
    started = time.perf_counter()
    with ExitStack() as stack:
        for meter in meters.values():
            stack.enter_context(meter)
        logs = asyncio.run(realtime_bench.run_sessions(ws_url, sessions, audio, config, seed=0))
    ended = time.perf_counter()
    wall_s = ended - started
    file_outcome = None
    if background is not None:
        # The text rate while both the sessions and a file ran.
        file_end = min(ended, background.finished_at or ended)
        file_outcome = {**background.stop(), "deltas_per_s": background.rate(started, file_end)}
    turns = [
        (stopped_at - started, log.completed[item] - stopped_at)
        for _, log in logs
        for item, (_, stopped_at) in log.stopped.items()
        if item in log.completed
    ]
    scores = [score_session(plan, log) for plan, log in logs]
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
        "file": file_outcome,
        "metrics": scrapes.summary(),
        "processes": {name: meter.summary() for name, meter in meters.items()},
    }


def started_files(edge_url: str, files: tuple[float, int]) -> BackgroundFile:
    """The files, POSTed back to back, once the first one's first text is back."""
    background = BackgroundFile(edge_url, files[0], count=files[1])
    if not background.first_delta.wait(900):
        raise RuntimeError(f"the long file did not start: {background.stop()}")
    return background


def files_alone(
    edge_url: str, vllm_url: str, files: tuple[float, int], seconds: float, pids: dict[str, int]
) -> dict[str, Any]:
    """The files with no live session, measured for `seconds` from the first one's first text (or
    until they are all done)."""
    meters = {name: ProcessMeter(pid) for name, pid in pids.items() if pid != os.getpid()}
    background = started_files(edge_url, files)
    scrapes = Scrapes(edge_url, vllm_url)
    started = time.perf_counter()
    with ExitStack() as stack:
        for meter in meters.values():
            stack.enter_context(meter)
        background.join(seconds)  # it ends early when every file is done
    ended = time.perf_counter()
    outcome = {**background.stop(), "deltas_per_s": background.rate(started, ended)}
    return {
        "file": outcome,
        "metrics": scrapes.summary(),
        "processes": {name: meter.summary() for name, meter in meters.items()},
    }


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
    with _vllm(vllm_url) as (url, vllm_pids), ExitStack() as stack:
        edges = [stack.enter_context(processes.edge(url, **mode.edge_settings)) for mode in modes()]
        pids = [{**vllm_pids, "edge": edge.pid, "load_generator": os.getpid()} for edge in edges]
        # A B B A A B: each mode's runs around the other's, so that drift in others' load falls alike.
        tqdm.write(f"  {sessions} sessions alone, with {file_count} × {long_seconds / 60:.0f} min files, files alone")
        alone = {i: live_run(edges[i].url, url, sessions, config, pids[i], None) for i in (0, 1)}
        with_file = {i: live_run(edges[i].url, url, sessions, config, pids[i], files) for i in (1, 0)}
        only_files = {i: files_alone(edges[i].url, url, files, with_file[i]["wall_s"], pids[i]) for i in (0, 1)}
        for i, mode in enumerate(modes()):
            during, by_itself = with_file[i]["stopped_to_completed_s"], alone[i]["stopped_to_completed_s"]
            row = {
                "mode": asdict(mode),
                "alone": alone[i],
                "with_file": with_file[i],
                "files_alone": only_files[i],
                "p99_ratio": ratio(during, by_itself),
                "turn_latency_p99_ratio": ratio(with_file[i]["turn_latency_s"], alone[i]["turn_latency_s"]),
                "file_rate_ratio": _rate_ratio(with_file[i]["file"], only_files[i]["file"]),
                "goal_met": goal_met(during, by_itself, with_file[i]),
            }
            rows.append(row)
            tqdm.write(table([row]))
            tqdm.write(metrics_table([row]))
            tqdm.write(overlap_table([row]))
    data = {
        "benchmark": "mixed",
        "machine": results.machine(),
        "backend": backend,
        "sessions": sessions,
        "load": asdict(config),
        "long_file_s": long_seconds,
        "files": file_count,
        "goal": f"speech_stopped → completed p99 with the files ≤ {GOAL_RATIO}x alone + {GOAL_SLACK_S * 1000:.0f} ms "
        "every turn completed",
        "rows": rows,
    }
    report = table(rows) + "\n\n" + metrics_table(rows) + "\n\n" + overlap_table(rows)
    results.write("mixed", data, report, plot(rows))
    return data


def _rate_ratio(with_live: dict[str, Any] | None, alone: dict[str, Any]) -> float | None:
    a, b = alone.get("deltas_per_s"), (with_live or {}).get("deltas_per_s")
    return None if not a or b is None else round(b / a, 2)


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "mode",
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
        during, by_itself = mixed["stopped_to_completed_s"], alone["stopped_to_completed_s"]
        rate_ratio = row["file_rate_ratio"] if row["file_rate_ratio"] is not None else "–"
        rates = (
            f"{(mixed['file'] or {}).get('deltas_per_s', '–')} / {row['files_alone']['file'].get('deltas_per_s', '–')}"
        )
        lines.append(
            [
                row["mode"]["name"],
                f"{results.ms(by_itself['p50'])} / {results.ms(by_itself['p99'])}",
                f"{results.ms(during['p50'])} / {results.ms(during['p99'])}",
                row["p99_ratio"] if row["p99_ratio"] is not None else "–",
                "yes" if row["goal_met"] else "no",
                f"{alone['turns_completed']}/{alone['turns_expected']}"
                f" / {mixed['turns_completed']}/{mixed['turns_expected']}",
                f"{rates} ({rate_ratio})",
                mixed["processes"].get("edge", {}).get("cpu_cores", "–"),
            ]
        )
    return results.markdown_table(header, lines)


def files_window_s(run: dict[str, Any]) -> float:
    """When the last file was done, in seconds from the sessions' start (they start at its first text)."""
    file = run["file"]
    return max(file["wall_s"]) - file["first_delta_after_s"]


def overlap_table(rows: list[dict[str, Any]]) -> str:
    """The turns that ended while the files ran (they are often done before the sessions), against
    the turns that ended in the same window of the run alone: a run's p99 can hide them."""
    header = [
        "mode",
        "window s",
        "turns alone / with files",
        "alone p50 / p90 / max ms",
        "with the files p50 / p90 / max ms",
    ]
    lines = []
    for row in rows:
        window = files_window_s(row["with_file"])
        cells: list[Any] = [row["mode"]["name"], f"{window:.1f}"]
        spans = []
        for run in (row["alone"], row["with_file"]):
            turns = sorted(v for at, v in run["turns_stopped_at_s_and_stopped_to_completed_s"] if at < window)
            stats = percentiles(turns, (50, 90))
            spans.append(
                (
                    len(turns),
                    f"{results.ms(stats['p50'])} / {results.ms(stats['p90'])} / {results.ms(max(turns, default=None))}",
                )
            )
        cells += [f"{spans[0][0]} / {spans[1][0]}", spans[0][1], spans[1][1]]
        lines.append(cells)
    return results.markdown_table(header, lines)


def metrics_table(rows: list[dict[str, Any]]) -> str:
    """Where the time went, per run: vLLM's mean per-request stages, the edge's part of a turn, how
    long the first file took to its first text (decoding, VAD, its first chunks), and the CPU of
    vLLM and the edge."""
    header = [
        "mode, run",
        "vLLM requests",
        "vLLM queue / prefill / decode / e2e mean ms",
        "edge turn total / edge part / backend part mean ms",
        "first file: POST → first text s",
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
                    (run["file"] or {}).get("first_delta_after_s", "–"),
                    f"{procs.get('vllm', {}).get('cpu_cores', '–')} / {procs.get('edge', {}).get('cpu_cores', '–')}",
                ]
            )
    return results.markdown_table(header, lines)


def plot(rows: list[dict[str, Any]]):
    figure, axis = plt.subplots(figsize=(8, 4.5))
    labels = [row["mode"]["name"] for row in rows]
    x = range(len(rows))
    bars = [("alone", "p50"), ("alone", "p99"), ("with_file", "p50"), ("with_file", "p99")]
    for offset, (key, q) in zip((-0.3, -0.1, 0.1, 0.3), bars, strict=False):
        values = [(row[key]["stopped_to_completed_s"][q] or float("nan")) * 1000 for row in rows]
        axis.bar([i + offset for i in x], values, 0.2, label=f"{key.replace('_', ' ')} {q}")
    axis.set_xticks(list(x), labels)
    axis.set_ylabel("speech_stopped → completed, ms (while the files run)")
    axis.set_title("Live turns with long files through the same edge")
    axis.legend(fontsize=8)
    return figure
