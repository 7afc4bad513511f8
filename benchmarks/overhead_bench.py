"""Edge overhead: latency of a short clip through the edge minus straight to vLLM.

At each concurrency, requests go to the edge and to vLLM in alternating batches (so a slow spell
of the machine hits both paths alike) until each path has `requests` answers. The overhead is
the difference of the two latency distributions at p50 and p99; the edge's `decode` and
`backend` stages (from its /metrics histograms) are shown beside it. Run against vLLM, and
against the zero-cost stand-in, which leaves the edge the CPU that vLLM would take.
"""

import asyncio
import time
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from benchmarks import processes, results
from benchmarks.speech import short_clip
from benchmarks.stats import histogram_quantiles, percentiles, scrape

CONCURRENCY = (1, 32)
WARMUP = 5


async def _batch(
    client: httpx.AsyncClient, url: str, form: dict[str, str], clip: bytes, count: int, concurrency: int
) -> list[float]:
    """`count` requests, `concurrency` at a time; latencies of the successful ones."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with gate:
            started = time.perf_counter()
            response = await client.post(url, data=form, files={"file": ("clip.wav", clip, "audio/wav")})
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one() for _ in range(count)))
    return latencies


async def _measure(
    edge_url: str, vllm_url: str, clip: bytes, concurrency: int, requests: int, bar: tqdm
) -> tuple[list[float], list[float]]:
    paths = {
        "edge": (f"{edge_url}/v1/audio/transcriptions", {"model": "whisper-1"}),
        "vllm": (
            f"{vllm_url}/v1/audio/transcriptions",
            {
                "model": processes.SERVED_MODEL,
                "response_format": "json",
                "max_completion_tokens": str(processes.MAX_OUTPUT_TOKENS),
            },
        ),
    }
    batch = max(concurrency * 2, 10)
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    found: dict[str, list[float]] = {"edge": [], "vllm": []}
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        for url, form in paths.values():
            await _batch(client, url, form, clip, WARMUP, concurrency)
        order = ["edge", "vllm"]
        attempts = 0
        while min(len(v) for v in found.values()) < requests and attempts < 4 * requests // batch + 4:
            attempts += 1
            for name in order:
                url, form = paths[name]
                found[name] += await _batch(client, url, form, clip, batch, concurrency)
            bar.update(batch)
            order.reverse()
    return found["edge"][:requests], found["vllm"][:requests]


def _overhead(edge: list[float], direct: list[float]) -> dict[str, float | None]:
    a, b = percentiles(edge, (50, 99)), percentiles(direct, (50, 99))
    found: dict[str, float | None] = {}
    for q in a:
        mine, theirs = a[q], b[q]
        found[q] = mine - theirs if mine is not None and theirs is not None else None
    return found


def run(edge_url: str, vllm_url: str, requests: int, backend: str, name: str = "overhead") -> dict[str, Any]:
    clip = short_clip()
    points = []
    for concurrency in CONCURRENCY:
        before = scrape(edge_url)
        with tqdm(total=requests, desc=f"overhead c={concurrency}", unit="req", leave=False) as bar:
            edge, direct = asyncio.run(_measure(edge_url, vllm_url, clip, concurrency, requests, bar))
        after = scrape(edge_url)
        point: dict[str, Any] = {
            "concurrency": concurrency,
            "requests_per_path": len(edge),
            "edge_s": percentiles(edge, (50, 90, 99)),
            "vllm_s": percentiles(direct, (50, 90, 99)),
            "overhead_s": _overhead(edge, direct),
            "edge_decode_stage_s": histogram_quantiles(before, after, "edge_stage_seconds", (50, 99), stage="decode"),
            "edge_backend_stage_s": histogram_quantiles(before, after, "edge_stage_seconds", (50, 99), stage="backend"),
            "latencies_edge": [round(v, 5) for v in edge],
            "latencies_vllm": [round(v, 5) for v in direct],
        }
        points.append(point)
        tqdm.write(
            f"  c={concurrency}: overhead p50 {results.ms(point['overhead_s']['p50'])} ms, "
            f"p99 {results.ms(point['overhead_s']['p99'])} ms"
        )
    data = {
        "benchmark": name,
        "machine": results.machine(),
        "backend": backend,
        "clip_s": round((len(clip) - 44) / 32000, 2),
        "points": points,
    }
    results.write(name, data, table(points), plot(points))
    return data


def table(points: list[dict[str, Any]]) -> str:
    header = [
        "concurrency",
        "edge p50 / p99 ms",
        "vLLM direct p50 / p99 ms",
        "overhead p50 ms",
        "overhead p99 ms",
        "edge decode stage p50 / p99 ms",
        "edge backend stage p50 / p99 ms",
        "targets (p50 < 5, p99 < 20 ms)",
    ]
    rows = []
    for p in points:
        over = p["overhead_s"]
        met = over["p50"] is not None and over["p50"] < 0.005 and over["p99"] < 0.020
        rows.append(
            [
                p["concurrency"],
                f"{results.ms(p['edge_s']['p50'])} / {results.ms(p['edge_s']['p99'])}",
                f"{results.ms(p['vllm_s']['p50'])} / {results.ms(p['vllm_s']['p99'])}",
                results.ms(over["p50"]),
                results.ms(over["p99"]),
                f"{results.ms(p['edge_decode_stage_s']['p50'])} / {results.ms(p['edge_decode_stage_s']['p99'])}",
                f"{results.ms(p['edge_backend_stage_s']['p50'])} / {results.ms(p['edge_backend_stage_s']['p99'])}",
                "met" if met else "missed",
            ]
        )
    return results.markdown_table(header, rows)


def plot(points: list[dict[str, Any]]):
    figure, axes = plt.subplots(1, len(points), figsize=(6 * len(points), 4.5), squeeze=False)
    for axis, p in zip(axes[0], points, strict=False):
        for key, label in (("latencies_edge", "through the edge"), ("latencies_vllm", "straight to vLLM")):
            values = np.sort(np.asarray(p[key])) * 1000
            axis.plot(values, np.linspace(0, 1, len(values), endpoint=False), label=label)
        axis.set_xscale("log")
        axis.set_xlabel("latency ms")
        axis.set_ylabel("fraction of requests")
        axis.set_title(f"short clip, {p['concurrency']} concurrent")
        axis.legend(fontsize=8)
    return figure
