"""VAD throughput: the batched engine vs silero-vad's own VADIterator (one ONNX model per stream).

For each concurrency N, N streams each get a different rotation of
tests/data/silero_test.wav (16 kHz) and feed it in 100 ms chunks as fast as
possible. Throughput is reported as audio seconds per wall second and per CPU
second of this process (all threads), i.e. the realtime factor per core.

The reference is silero-vad's ``VADIterator`` on ``load_silero_vad(onnx=True)``
(its onnxruntime wrapper, 1 intra-op thread), one model per stream, stepped
round robin in a Python loop. It runs up to 64 streams: one ORT session per
stream makes more impractical, and a per-stream model gains nothing from more
streams, so its 64-stream figure is used for 256 and 1024.

Writes benchmarks/results/vad_bench.json, vad_bench.png and vad_bench.md.
Run: python benchmarks/vad_bench.py
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import onnxruntime
from tqdm import tqdm

from vad import BatchedVADEngine, StreamParams

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
AUDIO = ROOT.parent / "tests" / "data" / "silero_test.wav"
RATE = 16000
CHUNK = 1600  # 100 ms, a typical realtime chunk
CONCURRENCY = [1, 16, 64, 256, 1024]
# Audio seconds per stream, bounded so the whole run stays well under 5 minutes.
ENGINE_SECONDS = {1: 60, 16: 60, 64: 30, 256: 20, 1024: 10}
REFERENCE_SECONDS = {1: 60, 16: 20, 64: 10}


def load_audio() -> np.ndarray:
    with av.open(str(AUDIO)) as container:
        stream = container.streams.audio[0]
        assert stream.rate == RATE
        to_mono = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        parts = [f.to_ndarray()[0] for frame in container.decode(stream) for f in to_mono.resample(frame)]
    return np.concatenate(parts).astype(np.float32)


def stream_audio(audio: np.ndarray, n: int, seconds: int) -> list[np.ndarray]:
    """n different rotations of the recording, each ``seconds`` long."""
    length = seconds * RATE
    shifts = np.linspace(0, len(audio), n, endpoint=False).astype(int)
    return [np.resize(np.roll(audio, -s), length) for s in shifts]


def machine() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def measure(run, audio_seconds: float) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "audio_s": audio_seconds,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "rtf_wall": round(audio_seconds / wall, 1),
        "rtf_per_core": round(audio_seconds / cpu, 1),
    }


def engine_run(streams: list[np.ndarray], bar: tqdm) -> None:
    async def one(engine: BatchedVADEngine, audio: np.ndarray) -> None:
        stream = engine.open_stream(StreamParams())
        for pos in range(0, len(audio), CHUNK):
            await stream.feed(audio[pos : pos + CHUNK])
            bar.update(CHUNK / RATE)
        stream.flush()
        stream.close()

    async def main() -> None:
        async with BatchedVADEngine() as engine:
            await asyncio.gather(*(one(engine, a) for a in streams))

    asyncio.run(main())


def reference_run(streams: list[np.ndarray], bar: tqdm) -> None:
    import torch
    from silero_vad import VADIterator, load_silero_vad

    iterators = [VADIterator(load_silero_vad(onnx=True)) for _ in streams]
    tensors = [torch.from_numpy(a) for a in streams]
    frames = len(streams[0]) // 512
    for i in range(frames):
        for it, audio in zip(iterators, tensors, strict=False):
            it(audio[i * 512 : (i + 1) * 512])
        bar.update(512 * len(streams) / RATE)


def main() -> None:
    audio = load_audio()
    total = sum(n * ENGINE_SECONDS[n] for n in CONCURRENCY) + sum(n * s for n, s in REFERENCE_SECONDS.items())
    rows = []
    with tqdm(total=total, unit="audio s", unit_scale=True) as bar:
        for n in CONCURRENCY:
            seconds = ENGINE_SECONDS[n]
            streams = stream_audio(audio, n, seconds)
            row: dict[str, Any] = {"streams": n, "engine": measure(lambda s=streams: engine_run(s, bar), n * seconds)}
            if n in REFERENCE_SECONDS:
                ref_streams = stream_audio(audio, n, REFERENCE_SECONDS[n])
                row["reference"] = measure(lambda s=ref_streams: reference_run(s, bar), n * REFERENCE_SECONDS[n])
            rows.append(row)
    measured_ref = {r["streams"]: r["reference"] for r in rows if "reference" in r}
    for row in rows:
        ref = row.get("reference") or measured_ref[max(measured_ref)]
        row["speedup_per_core"] = round(row["engine"]["rtf_per_core"] / ref["rtf_per_core"], 2)

    result = {
        "machine": machine(),
        "reference": "silero_vad.VADIterator on load_silero_vad(onnx=True), one model per stream",
        "chunk_ms": CHUNK * 1000 // RATE,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vad_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "vad_bench.md").write_text(markdown(result))
    plot(result)
    print(markdown(result))


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}, onnxruntime {m['onnxruntime']}.",
        "",
        "| streams | engine x realtime / core | engine x realtime (wall) | reference x realtime / core "
        "| speedup / core |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        ref = row.get("reference")
        ref_text = f"{ref['rtf_per_core']:.0f}" if ref else "(64-stream figure)"
        lines.append(
            f"| {row['streams']} | {row['engine']['rtf_per_core']:.0f} | {row['engine']['rtf_wall']:.0f} "
            f"| {ref_text} | {row['speedup_per_core']:.1f}x |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    n = [r["streams"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(n, [r["engine"]["rtf_per_core"] for r in rows], "o-", label="BatchedVADEngine (per CPU core)")
    ref = [r for r in rows if "reference" in r]
    ax.plot(
        [r["streams"] for r in ref],
        [r["reference"]["rtf_per_core"] for r in ref],
        "s--",
        label="silero VADIterator, ONNX (per CPU core)",
    )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("audio seconds per CPU second (x realtime)")
    ax.set_title(f"VAD throughput, {result['machine']['nproc']} x {result['machine']['cpu']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "vad_bench.png", dpi=120)


if __name__ == "__main__":
    main()
