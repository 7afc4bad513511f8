"""Realtime load: N concurrent sessions streaming speech with pauses at 1x, swept until a budget breaks.

Per N: turn latency (speech end in the audio → `completed` arriving), the edge's own share of it
(from the edge's `edge_realtime_turn_seconds{part="edge"}` histogram: speech_stopped → completed
minus the time spent waiting on the backend, between two scrapes of /metrics), how late the VAD
reports a turn's end beyond the configured 500 ms of silence, turns detected vs sent, failed and
dropped sessions, and the CPU and memory of the edge (and of the backend and this load generator).
"""

import asyncio
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tqdm import tqdm

from benchmarks import results
from benchmarks.procstats import ProcessMeter
from benchmarks.realtime_client import SessionLog, append_message, run_session, score_session
from benchmarks.speech import SessionAudio, SessionPlan
from benchmarks.stats import counter_delta, histogram_quantiles, percentiles, scrape

SILENCE_WAIT_S = 0.5
TURN_HISTOGRAM = "edge_realtime_turn_seconds"


@dataclass(frozen=True)
class Budget:
    """What a run must hold to pass; zero dropped sessions, missed and failed turns always."""

    edge_p99_s: float | None = None
    turn_p99_s: float | None = None

    def describe(self) -> str:
        limits = ["0 dropped sessions", "0 missed or failed turns"]
        if self.edge_p99_s is not None:
            limits.append(f"edge share p99 < {self.edge_p99_s * 1000:.0f} ms")
        if self.turn_p99_s is not None:
            limits.append(f"turn latency p99 < {self.turn_p99_s:.1f} s")
        return ", ".join(limits)


@dataclass(frozen=True)
class LoadConfig:
    seconds: float = 30.0
    chunk_ms: int = 100
    drain_s: float = 15.0
    ramp_s: float = 2.0
    load_processes: int = 1  # client processes sharing the sessions (one event loop each)


SessionRun = tuple[SessionPlan, SessionLog]
START_MARGIN_S = 20.0  # time the client processes get to start and build their audio


async def run_sessions(url: str, n: int, audio: SessionAudio, config: LoadConfig, seed: int) -> list[SessionRun]:
    """`n` sessions started over `config.ramp_s`, in this process; each one's plan and log."""
    return await _load(url, list(range(n)), n, audio, config, seed)


async def _load(
    url: str, indices: list[int], n: int, audio: SessionAudio, config: LoadConfig, seed: int, progress: bool = True
) -> list[SessionRun]:
    """Run sessions `indices` of `n` (session i starts `ramp_s * i / n` in)."""
    chunk_s = config.chunk_ms / 1000
    plans = {i: audio.plan(config.seconds, seed + i) for i in indices}

    async def one(i: int) -> SessionLog:
        await asyncio.sleep(config.ramp_s * i / n)
        return await run_session(url, plans[i], audio.messages, chunk_s, config.drain_s)

    tasks = asyncio.gather(*(one(i) for i in indices))
    with tqdm(
        total=int(config.seconds + config.ramp_s), desc=f"{n} sessions", unit="s", leave=False, disable=not progress
    ) as bar:
        while not tasks.done() and bar.n < bar.total:
            await asyncio.sleep(1)
            bar.update(1)
        logs = await tasks
    return [(plans[i], log) for i, log in zip(indices, logs, strict=True)]


def _load_part(
    url: str, indices: list[int], n: int, config: LoadConfig, seed: int, start_at: float
) -> tuple[list[SessionRun], float]:
    """In a client process: its share of the sessions, from `start_at` (`time.monotonic()`, which is
    system-wide on Linux); returns them and the CPU seconds the process used for them."""
    audio = SessionAudio(config.chunk_ms, append_message)
    time.sleep(max(0.0, start_at - time.monotonic()))
    cpu = time.process_time()
    runs = asyncio.run(_load(url, indices, n, audio, config, seed, progress=False))
    return runs, time.process_time() - cpu


def _load_in_processes(url: str, n: int, config: LoadConfig, seed: int) -> tuple[list[SessionRun], float]:
    """The sessions spread over `load_processes` client processes; returns all of them and the CPU
    seconds those processes used."""
    k = config.load_processes
    start_at = time.monotonic() + START_MARGIN_S
    with ProcessPoolExecutor(k, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = [pool.submit(_load_part, url, list(range(j, n, k)), n, config, seed, start_at) for j in range(k)]
        done = [part.result() for part in parts]
    return [run for runs, _ in done for run in runs], sum(cpu for _, cpu in done)


def run_point(
    edge_url: str, n: int, audio: SessionAudio, config: LoadConfig, pids: dict[str, int], seed: int = 0
) -> dict[str, Any]:
    """One load level; returns its measurements."""
    ws_url = edge_url.replace("http", "ws", 1) + "/v1/realtime"
    before = scrape(edge_url)
    meters = {name: ProcessMeter(pid, children=pid != os.getpid()) for name, pid in pids.items()}
    started = time.perf_counter()
    client_cpu_s = 0.0
    with ExitStack() as stack:
        for meter in meters.values():
            stack.enter_context(meter)
        if config.load_processes > 1:
            sessions, client_cpu_s = _load_in_processes(ws_url, n, config, seed)
        else:
            sessions = asyncio.run(_load(ws_url, list(range(n)), n, audio, config, seed))
    wall = time.perf_counter() - started
    after = scrape(edge_url)
    cpu_s = {name: meter.cpu_s for name, meter in meters.items()}
    processes = {name: meter.summary() for name, meter in meters.items()}
    if "load_generator" in processes and client_cpu_s:
        cpu_s["load_generator"] += client_cpu_s
        processes["load_generator"]["client_processes_cpu_s"] = round(client_cpu_s, 2)
    scores = [score_session(plan, log) for plan, log in sessions]
    logs = [log for _, log in sessions]
    latencies = [v for s in scores for v in s.latencies_s]
    vad_extra = [v - SILENCE_WAIT_S for s in scores for v in s.vad_lag_s]
    expected = sum(s.expected for s in scores)
    matched = sum(s.matched for s in scores)
    dropped = [log.dropped for log in logs if log.dropped]
    return {
        "sessions": n,
        "wall_s": round(wall, 1),
        "turns_expected": expected,
        "turns_detected": sum(s.detected for s in scores),
        "turns_completed_matched": matched,
        "turns_missed": expected - matched,
        "turns_failed": sum(s.failed for s in scores),
        "sessions_dropped": len(dropped),
        "drop_reasons": sorted(set(dropped))[:5],
        "error_events": sum(len(log.errors) for log in logs),
        "turn_latency_s": percentiles(latencies),
        "stopped_to_completed_s": percentiles([v for s in scores for v in s.stop_to_done_s]),
        "vad_lag_beyond_silence_s": percentiles(vad_extra),
        "edge_share_s": histogram_quantiles(before, after, TURN_HISTOGRAM, part="edge"),
        "backend_s": histogram_quantiles(before, after, TURN_HISTOGRAM, part="backend"),
        "edge_turns_counted": counter_delta(before, after, f"{TURN_HISTOGRAM}_count", part="edge"),
        "client_max_send_lag_s": round(max((log.max_send_lag_s for log in logs), default=0.0), 4),
        "processes": processes,
        "cpu_ms_per_session_s": {name: round(cpu * 1000 / (n * config.seconds), 2) for name, cpu in cpu_s.items()},
    }


def passes(point: dict[str, Any], budget: Budget) -> bool:
    if point["sessions_dropped"] or point["turns_missed"] or point["turns_failed"]:
        return False
    edge_p99 = point["edge_share_s"]["p99"]
    turn_p99 = point["turn_latency_s"]["p99"]
    if budget.edge_p99_s is not None and (edge_p99 is None or edge_p99 >= budget.edge_p99_s):
        return False
    return budget.turn_p99_s is None or (turn_p99 is not None and turn_p99 < budget.turn_p99_s)


def sweep(
    edge_url: str, levels: list[int], budget: Budget, config: LoadConfig, pids: dict[str, int]
) -> tuple[list[dict[str, Any]], int | None]:
    """Run increasing N until one breaks the budget; return the points and the largest N that held."""
    audio = SessionAudio(config.chunk_ms, append_message)
    points, best = [], None
    for n in levels:
        point = run_point(edge_url, n, audio, config, pids)
        point["passed"] = passes(point, budget)
        points.append(point)
        tqdm.write(_summary_line(point))
        if not point["passed"]:
            break
        best = n
    return points, best


def _summary_line(point: dict[str, Any]) -> str:
    edge = point["processes"].get("edge", {})
    return (
        f"  N={point['sessions']}: turn p50/p99 {results.ms(point['turn_latency_s']['p50'])}/"
        f"{results.ms(point['turn_latency_s']['p99'])} ms, "
        f"edge share p99 {results.ms(point['edge_share_s']['p99'])} ms, "
        f"turns {point['turns_completed_matched']}/{point['turns_expected']}, dropped {point['sessions_dropped']}, "
        f"edge CPU {edge.get('cpu_cores', '–')} cores "
        f"({point['cpu_ms_per_session_s'].get('edge', '–')} ms per session-second), "
        f"load generator {point['cpu_ms_per_session_s'].get('load_generator', '–')} ms per session-second, "
        f"RSS {edge.get('rss_peak_mb', '–')} MB "
        f"→ {'ok' if point['passed'] else 'over budget'}"
    )


def table(points: list[dict[str, Any]]) -> str:
    header = [
        "sessions",
        "turns ok / sent",
        "dropped",
        "turn p50 ms",
        "turn p95 ms",
        "turn p99 ms",
        "edge share p50 / p99 ms",
        "VAD lag p99 ms",
        "backend p50 / p99 ms",
        "edge CPU cores",
        "edge CPU ms / session-s",
        "load gen. CPU ms / session-s",
        "edge RSS MB",
        "within budget",
    ]
    rows = []
    for p in points:
        edge = p["processes"].get("edge", {})
        rows.append(
            [
                p["sessions"],
                f"{p['turns_completed_matched']} / {p['turns_expected']}",
                p["sessions_dropped"],
                results.ms(p["turn_latency_s"]["p50"]),
                results.ms(p["turn_latency_s"]["p95"]),
                results.ms(p["turn_latency_s"]["p99"]),
                f"{results.ms(p['edge_share_s']['p50'])} / {results.ms(p['edge_share_s']['p99'])}",
                results.ms(p["vad_lag_beyond_silence_s"]["p99"]),
                f"{results.ms(p['backend_s']['p50'])} / {results.ms(p['backend_s']['p99'])}",
                edge.get("cpu_cores", "–"),
                p.get("cpu_ms_per_session_s", {}).get("edge", "–"),
                p.get("cpu_ms_per_session_s", {}).get("load_generator", "–"),
                edge.get("rss_peak_mb", "–"),
                "yes" if p["passed"] else "no",
            ]
        )
    return results.markdown_table(header, rows)


def plot(points: list[dict[str, Any]], title: str):
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    ns = [p["sessions"] for p in points]

    def series(key: str, q: str) -> list[float]:
        return [(p[key][q] or float("nan")) * 1000 for p in points]

    for q in ("p50", "p95", "p99"):
        left.plot(ns, series("turn_latency_s", q), marker="o", label=f"turn latency {q}")
    left.plot(ns, series("edge_share_s", "p99"), marker="s", linestyle="--", label="edge share p99")
    left.plot(ns, series("backend_s", "p99"), marker="^", linestyle=":", label="backend p99")
    left.set_xlabel("concurrent sessions (1x real time)")
    left.set_ylabel("ms")
    left.set_yscale("log")
    left.legend(fontsize=8)
    left.set_title(title)
    cpu = [p["processes"].get("edge", {}).get("cpu_cores", float("nan")) for p in points]
    rss = [p["processes"].get("edge", {}).get("rss_peak_mb", float("nan")) for p in points]
    right.plot(ns, cpu, marker="o", color="tab:red", label="edge CPU (cores)")
    right.set_xlabel("concurrent sessions")
    right.set_ylabel("edge CPU cores", color="tab:red")
    twin = right.twinx()
    twin.plot(ns, rss, marker="s", color="tab:blue", label="edge peak RSS (MB)")
    twin.set_ylabel("edge peak RSS MB", color="tab:blue")
    right.set_title("edge resources")
    return figure


def report(
    name: str,
    title: str,
    points: list[dict[str, Any]],
    best: int | None,
    budget: Budget,
    config: LoadConfig,
    setup: dict[str, Any],
) -> None:
    data = {
        "benchmark": name,
        "title": title,
        "machine": results.machine(),
        "setup": setup,
        "budget": budget.describe(),
        "load": asdict(config),
        "largest_sessions_within_budget": best,
        "points": points,
    }
    summary = f"Largest N within budget ({budget.describe()}): {best if best is not None else 'none'}"
    results.write(name, data, f"{table(points)}\n\n{summary}", plot(points, title))
    tqdm.write(summary)
