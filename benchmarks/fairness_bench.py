"""Fairness between files: a 10-second clip submitted while a long file is being transcribed.

Against one vLLM, two edges: with the global file budget (`MAX_FILE_BACKEND_REQUESTS` at
`--file-budget`, shared in turns) and without one (each request has `MAX_CHUNK_CONCURRENCY`
chunks at vLLM, first come first served: the edge before this change). Per edge: the clip's
latency alone (median of `repeats`), then again while the long file runs (submitted first, its
first delta received). Goal: with the file at most 2x alone.
"""

from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import statistics
import time

import matplotlib.pyplot as plt
from tqdm import tqdm

from benchmarks import processes, results
from benchmarks.background_file import BackgroundFile
from benchmarks.speech import long_recording
from server.core.audio import encode_wav

CLIP_S = 10.0
GOAL_RATIO = 2.0

NO_BUDGET = 1_000_000


def clip_latencies(edge_url: str, clip: bytes, repeats: int) -> list[float]:
    walls = []
    with httpx.Client(timeout=600) as client:
        for _ in range(repeats):
            started = time.perf_counter()
            response = client.post(
                f"{edge_url}/v1/audio/transcriptions",
                data={"model": "whisper-1"},
                files={"file": ("clip.wav", clip, "audio/wav")},
            )
            response.raise_for_status()
            walls.append(time.perf_counter() - started)
    return walls


def measure(edge_url: str, clip: bytes, long_seconds: float, repeats: int) -> dict[str, Any]:
    alone = clip_latencies(edge_url, clip, repeats)
    background = BackgroundFile(edge_url, long_seconds)
    if not background.first_delta.wait(600):
        raise RuntimeError(f"the long file did not start: {background.stop()}")
    during = clip_latencies(edge_url, clip, repeats)
    still_running = background.finished_at is None
    file_outcome = background.stop()
    alone_s, during_s = statistics.median(alone), statistics.median(during)
    return {
        "alone_s": alone,
        "with_file_s": during,
        "alone_median_s": round(alone_s, 3),
        "with_file_median_s": round(during_s, 3),
        "ratio": round(during_s / alone_s, 2),
        "file_still_running_after_the_clips": still_running,
        "file": file_outcome,
    }


def run(vllm_url: str, long_seconds: float, repeats: int, file_budget: int, backend: str) -> dict[str, Any]:
    clip = encode_wav(long_recording(CLIP_S))
    rows = []
    for name, budget in (("fair budget", file_budget), ("no global budget", NO_BUDGET)):
        tqdm.write(f"  {name}: a {CLIP_S:.0f} s clip alone and during a {long_seconds / 60:.0f} min file")
        with processes.edge(vllm_url, max_file_backend_requests=budget) as edge:
            row = {"edge": name, "file_budget": budget, **measure(edge.url, clip, long_seconds, repeats)}
        rows.append(row)
    data = {
        "benchmark": "fairness",
        "machine": results.machine(),
        "backend": backend,
        "clip_s": CLIP_S,
        "long_file_s": long_seconds,
        "repeats": repeats,
        "goal": f"clip latency with the file ≤ {GOAL_RATIO}x alone",
        "rows": rows,
    }
    results.write("fairness", data, table(rows), plot(rows))
    tqdm.write(table(rows))
    return data


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "edge",
        "clip alone s (median)",
        "clip during the long file s (median)",
        "ratio",
        "goal met",
        "file still running after the clips",
    ]
    lines = [
        [
            row["edge"] + ("" if row["file_budget"] == NO_BUDGET else f" ({row['file_budget']})"),
            f"{row['alone_median_s']:.2f}",
            f"{row['with_file_median_s']:.2f}",
            row["ratio"],
            "yes" if row["ratio"] <= GOAL_RATIO else "no",
            "yes" if row["file_still_running_after_the_clips"] else "no (the ratio means nothing)",
        ]
        for row in rows
    ]
    return results.markdown_table(header, lines)


def plot(rows: list[dict[str, Any]]):
    figure, axis = plt.subplots(figsize=(7, 4.5))
    x = range(len(rows))
    axis.bar([i - 0.2 for i in x], [row["alone_median_s"] for row in rows], 0.4, label="clip alone")
    axis.bar([i + 0.2 for i in x], [row["with_file_median_s"] for row in rows], 0.4, label="clip during the long file")
    axis.set_xticks(list(x), [row["edge"] for row in rows])
    axis.set_ylabel("wall s (median)")
    axis.set_title(f"A {CLIP_S:.0f} s clip while a long file runs")
    axis.legend(fontsize=8)
    return figure
