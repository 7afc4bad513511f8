"""File transcription: wall time and speed through the edge vs the same files straight to vLLM.

Each recording in tests/data is sent `repeats` times both ways (median wall time kept). Each long
file (`--long-seconds` of the recordings joined, written to benchmarks/.work/) goes once through
the edge (VAD chunks in parallel, `MAX_CHUNK_CONCURRENCY` at a time), once through a second,
local edge that sends its chunks one at a time (`MAX_CHUNK_CONCURRENCY=1`), and once as a single request to
vLLM, whose answer is reported whatever it is (vLLM may refuse or cut a file that large).
Speed is "x realtime": audio seconds per wall second.

The offline VAD part (`results/files_vad.*`) times the edge's file segmentation
(`vad.speech_segments` with the service's `auto` parameters) over each long file in this process,
once per Silero model: the frame model (one onnxruntime call per 32 ms frame) and the sequence
model the service uses, checking that both give the same segments. It needs no vLLM:
`python -m benchmarks.files_bench [--long-seconds 600,3600]` runs it alone.
"""

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib
import onnxruntime

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tqdm import tqdm

from benchmarks import processes, results
from benchmarks.speech import DATA, long_file
from benchmarks.stats import counter_delta, scrape
from server.core.audio import SAMPLE_RATE, decode_audio
from server.core.settings import Settings
from vad import SileroModel, SileroSequenceModel, VADParams, speech_segments
from vad.model import ProbabilityModel

LONG_TIMEOUT_S = 1200.0
VAD_REPEATS = 3


def _post(client: httpx.Client, url: str, data: bytes, name: str, form: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        response = client.post(url, data=form, files={"file": (name, data)})
    except httpx.HTTPError as exc:
        return {"status": None, "wall_s": time.perf_counter() - started, "error": f"{type(exc).__name__}: {exc}"}
    wall = time.perf_counter() - started
    outcome: dict[str, Any] = {"status": response.status_code, "wall_s": wall}
    try:
        body = response.json()
    except ValueError:
        body = {"raw": response.text[:300]}
    if response.status_code == 200:
        outcome["text_chars"] = len(body.get("text", ""))
        outcome["usage"] = body.get("usage")
    else:
        outcome["error"] = str(body.get("error", body))[:400]
    return outcome


def _edge(client: httpx.Client, edge_url: str, data: bytes, name: str) -> dict[str, Any]:
    return _post(client, f"{edge_url}/v1/audio/transcriptions", data, name, {"model": "whisper-1"})


def _vllm(client: httpx.Client, vllm_url: str, data: bytes, name: str) -> dict[str, Any]:
    form = {
        "model": processes.SERVED_MODEL,
        "response_format": "json",
        "max_completion_tokens": str(processes.MAX_OUTPUT_TOKENS),
    }
    return _post(client, f"{vllm_url}/v1/audio/transcriptions", data, name, form)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r["wall_s"] for r in runs if r["status"] == 200]
    last = runs[-1]
    return {**last, "wall_s": statistics.median(ok) if ok else last["wall_s"], "runs_ok": len(ok), "runs": len(runs)}


def _speed(audio_s: float, outcome: dict[str, Any]) -> float | None:
    return round(audio_s / outcome["wall_s"], 1) if outcome.get("status") == 200 else None


def recordings(client: httpx.Client, edge_url: str, vllm_url: str, repeats: int) -> list[dict[str, Any]]:
    rows = []
    paths = sorted(DATA.iterdir())
    for path in tqdm(paths, desc="recordings", leave=False):
        data = path.read_bytes()
        audio_s = len(decode_audio(data, max_duration_s=3600)) / 16000
        edge = _median_run([_edge(client, edge_url, data, path.name) for _ in range(repeats)])
        direct = _median_run([_vllm(client, vllm_url, data, path.name) for _ in range(repeats)])
        rows.append(
            {
                "file": path.name,
                "audio_s": round(audio_s, 2),
                "edge": edge,
                "vllm": direct,
                "edge_x_realtime": _speed(audio_s, edge),
                "vllm_x_realtime": _speed(audio_s, direct),
            }
        )
    return rows


def long_audio(
    client: httpx.Client, edge_url: str, vllm_url: str, seconds: float, sequential_edge: str
) -> dict[str, Any]:
    path = long_file(seconds, processes.WORK)
    data = path.read_bytes()
    runs: dict[str, Any] = {"file": str(path.relative_to(processes.ROOT)), "audio_s": seconds, "bytes": len(data)}
    targets = [("edge_parallel", edge_url), ("edge_sequential", sequential_edge)]
    for label, url in tqdm(targets, desc=f"{seconds / 60:.0f} min file via edge", leave=False):
        before = scrape(url)
        outcome = _edge(client, url, data, path.name)
        outcome["chunks"] = counter_delta(before, scrape(url), "edge_backend_chunks_total")
        runs[label] = {**outcome, "x_realtime": _speed(seconds, outcome)}
    tqdm.write(f"  {seconds / 60:.0f} min file: one request straight to vLLM (may take a while or be refused)")
    direct = _vllm(client, vllm_url, data, path.name)
    runs["vllm_single_request"] = {**direct, "x_realtime": _speed(seconds, direct)}
    return runs


def table(rows: list[dict[str, Any]], longs: list[dict[str, Any]]) -> str:
    header = [
        "input",
        "audio s",
        "edge wall s",
        "edge x realtime",
        "vLLM direct wall s",
        "vLLM x realtime",
        "vLLM answer",
    ]
    lines = []
    for row in rows:
        lines.append(
            [
                row["file"],
                row["audio_s"],
                f"{row['edge']['wall_s']:.3f}",
                row["edge_x_realtime"] or "–",
                f"{row['vllm']['wall_s']:.3f}",
                row["vllm_x_realtime"] or "–",
                row["vllm"]["status"],
            ]
        )
    for long in longs:
        direct = long["vllm_single_request"]
        for label in ("edge_parallel", "edge_sequential"):
            run = long[label]
            lines.append(
                [
                    f"{long['audio_s'] / 60:.0f} min file, {label.replace('_', ' ')} "
                    f"({run.get('chunks', 0):.0f} chunks)",
                    long["audio_s"],
                    f"{run['wall_s']:.1f}",
                    run["x_realtime"] or f"failed {run['status']}",
                    f"{direct['wall_s']:.1f}",
                    direct["x_realtime"] or "–",
                    direct["status"],
                ]
            )
    return results.markdown_table(header, lines)


def plot(rows: list[dict[str, Any]], longs: list[dict[str, Any]]):
    figure, axes = plt.subplots(1, 1 + len(longs), figsize=(6 * (1 + len(longs)), 4.5), squeeze=False)
    left = axes[0][0]
    names = [row["file"] for row in rows]
    x = range(len(names))
    left.bar([i - 0.2 for i in x], [row["edge"]["wall_s"] for row in rows], 0.4, label="through the edge")
    left.bar([i + 0.2 for i in x], [row["vllm"]["wall_s"] for row in rows], 0.4, label="straight to vLLM")
    left.set_xticks(list(x), names, rotation=15, fontsize=8)
    left.set_ylabel("wall s (median)")
    left.set_title("test recordings")
    left.legend(fontsize=8)
    for axis, long in zip(axes[0][1:], longs, strict=False):
        labels, walls = [], []
        for key in ("edge_parallel", "edge_sequential", "vllm_single_request"):
            ok = long[key].get("status") == 200
            labels.append(key.replace("_", "\n") + ("" if ok else f"\n(HTTP {long[key].get('status')})"))
            walls.append(long[key]["wall_s"])
        axis.bar(labels, walls, color=["tab:blue", "tab:cyan", "tab:orange"])
        axis.set_ylabel("wall s")
        axis.set_title(f"{long['audio_s'] / 60:.0f} min file")
    return figure


def _vad_params(settings: Settings) -> VADParams:
    """The parameters `TranscriptionService` segments files with (`chunking_strategy` auto)."""
    return VADParams(
        threshold=settings.vad_threshold,
        min_silence_duration_ms=settings.vad_min_silence_ms,
        speech_pad_ms=settings.vad_speech_pad_ms,
        max_speech_duration_s=settings.max_chunk_s,
    )


def _time_vad(audio: Any, params: VADParams, model: ProbabilityModel) -> dict[str, Any]:
    """Median wall and CPU seconds of `VAD_REPEATS` segmentations of `audio`, and the segments."""
    speech_segments(audio[:SAMPLE_RATE], params, model)  # warm-up: first-call allocations
    walls, cpus = [], []
    segments: list[tuple[int, int]] = []
    for _ in range(VAD_REPEATS):
        wall, cpu = time.perf_counter(), time.process_time()
        found = speech_segments(audio, params, model)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        segments = [(s.start_sample, s.end_sample) for s in found]
    seconds = len(audio) / SAMPLE_RATE
    wall_s, cpu_s = statistics.median(walls), statistics.median(cpus)
    return {
        "wall_s": round(wall_s, 3),
        "cpu_s": round(cpu_s, 3),
        "x_realtime": round(seconds / wall_s),
        "x_realtime_per_cpu_s": round(seconds / cpu_s),
        "segments": segments,
    }


def offline_vad(long_seconds: list[float]) -> dict[str, Any]:
    """Time file segmentation with the frame and the sequence model over each long file; write files_vad.*."""
    settings = Settings()  # what the service would use here (environment, .env)
    params = _vad_params(settings)
    threads = settings.vad_intra_op_threads
    models: dict[str, ProbabilityModel] = {
        "frame model (SileroModel)": SileroModel(intra_op_threads=threads),
        "sequence model (SileroSequenceModel, used by the service)": SileroSequenceModel(intra_op_threads=threads),
    }
    rows = []
    for seconds in tqdm(long_seconds, desc="offline VAD", leave=False):
        path = long_file(seconds, processes.WORK)
        audio = decode_audio(path, max_duration_s=seconds + 1)
        timed = {name: _time_vad(audio, params, model) for name, model in models.items()}
        segment_lists = [t.pop("segments") for t in timed.values()]
        rows.append(
            {
                "file": str(path.relative_to(processes.ROOT)),
                "audio_s": seconds,
                "segments": len(segment_lists[0]),
                "same_segments": all(s == segment_lists[0] for s in segment_lists),
                "models": timed,
            }
        )
    data = {
        "benchmark": "files_vad",
        "machine": results.machine(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_intra_op_threads": threads,
        "repeats": VAD_REPEATS,
        "vad_params": vars(params) | {"max_speech_duration_s": params.max_speech_duration_s},
        "files": rows,
    }
    results.write("files_vad", data, vad_table(rows), vad_plot(rows))
    tqdm.write(vad_table(rows))
    return data


def vad_table(rows: list[dict[str, Any]]) -> str:
    header = ["file", "audio s", "model", "wall s", "x realtime", "CPU s", "x realtime / CPU s", "segments", "same"]
    lines = []
    for row in rows:
        for name, timed in row["models"].items():
            lines.append(
                [
                    f"{row['audio_s'] / 60:g} min file",
                    row["audio_s"],
                    name,
                    f"{timed['wall_s']:.2f}",
                    timed["x_realtime"],
                    f"{timed['cpu_s']:.2f}",
                    timed["x_realtime_per_cpu_s"],
                    row["segments"],
                    "yes" if row["same_segments"] else "NO",
                ]
            )
    return results.markdown_table(header, lines)


def vad_plot(rows: list[dict[str, Any]]):
    figure, axis = plt.subplots(figsize=(7, 4))
    names = list(rows[0]["models"]) if rows else []
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        positions = [j + (i - (len(names) - 1) / 2) * width for j in range(len(rows))]
        axis.bar(positions, [row["models"][name]["x_realtime"] for row in rows], width, label=name.split(" (")[0])
    axis.set_xticks(range(len(rows)), [f"{row['audio_s'] / 60:g} min file" for row in rows])
    axis.set_ylabel("x realtime (wall)")
    axis.set_title("offline VAD (file segmentation)")
    axis.legend(fontsize=8)
    return figure


def run(edge_url: str, vllm_url: str, long_seconds: list[float], repeats: int, backend: str) -> dict[str, Any]:
    with httpx.Client(timeout=httpx.Timeout(LONG_TIMEOUT_S, connect=10)) as client:
        rows = recordings(client, edge_url, vllm_url, repeats)
        with processes.edge(vllm_url, max_chunk_concurrency=1) as sequential:
            longs = [long_audio(client, edge_url, vllm_url, seconds, sequential.url) for seconds in long_seconds]
    data = {
        "benchmark": "files",
        "machine": results.machine(),
        "backend": backend,
        "max_output_tokens_per_request": processes.MAX_OUTPUT_TOKENS,
        "recordings": rows,
        "long_files": longs,
    }
    results.write("files", data, table(rows, longs), plot(rows, longs))
    tqdm.write(table(rows, longs))
    offline_vad(long_seconds)
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.files_bench", description="The offline VAD part alone.")
    parser.add_argument("--long-seconds", default="600,3600", help="lengths of the long files, comma-separated")
    parser.add_argument("--results-dir", type=Path, default=results.RESULTS)
    args = parser.parse_args(argv)
    results.directory = args.results_dir
    offline_vad([float(part) for part in args.long_seconds.split(",") if part])


if __name__ == "__main__":
    main()
