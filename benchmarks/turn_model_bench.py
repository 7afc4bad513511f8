"""Smart Turn v3.2 (vad.SmartTurnModel): CPU per call by batch size, and its answers at pauses.

Each measurement is made for both precisions (`SMART_TURN_PRECISION`): the int8 file as shipped,
and float32 with its quantization folded away (`vad.qdq`).

`python -m benchmarks.turn_model_bench [--repeats N]` (a minute or two on an idle 2-core machine).

Cost: one `predict` call on B = 1, 4, 16 recordings (8 s windows of jfk.flac and silero_test.wav),
split into the numpy features (`vad.log_mel`) and the onnxruntime call (1 intra-op thread);
CPU is this process's (all threads), per call and per recording.

Accuracy: recordings are cut at their pauses, found with `vad.speech_segments` (silero's defaults:
100 ms minimum silence, so the last region ends before the recording does), 200 ms after each
speech region's end (a VAD's end-of-speech wait, as a session would ask). Each pause is labelled
from the known words, never by listening, as inside a sentence or at a sentence's end:

* real speech: tests/data/jfk.flac, whose words are known (its README): "And so, my fellow
  Americans | ask not | what your country can do for you | ask what you can do for your country.":
  three pauses inside the sentence and its end;
* synthetic speech: the sentences in `SYNTHETIC`, spoken by espeak-ng with a 700 ms break at each
  `|`, so each pause's place in the sentence is known by construction. Skipped when `espeak-ng` is
  not installed (Debian: `apt-get install espeak-ng`), or for a text whose pause count VAD does not
  find exactly.

At each threshold, "complete" is probability >= threshold.

Stability: the same pauses of both recordings, cut 0, 100 and 200 ms after the speech's end, read
again with their features changed by one part in a million (times a standard normal, 3 draws):
how far the probability moves shows which readings a different CPU's arithmetic (other SIMD
kernels, other rounding) could change.

Writes results/turn_model.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime

from benchmarks import results
from benchmarks.speech import recording
from server.core.audio import SAMPLE_RATE, decode_audio
from vad import SmartTurnModel, VADParams, speech_segments
from vad.log_mel import log_mel
from vad.smart_turn import Precision, model_window

PRECISIONS: tuple[Precision, ...] = ("int8", "float32")
BATCHES = (1, 4, 16)
STABILITY_WAITS_MS = (0, 100, 200)
NUDGE = 1e-6
NUDGES = 3
THRESHOLDS = (0.5, 0.7, 0.9)
WAIT_S = 0.2
SEGMENTS = VADParams()
JFK_WORDS = [
    "And so, my fellow Americans",
    "ask not",
    "what your country can do for you",
    "ask what you can do for your country.",
]
SYNTHETIC = [
    "I'd like to book a table for two | at seven tonight. | Do you have anything by the window?",
    "The thing is, | I was going to call you | but my phone died.",
    "Could you send me | the report from last week?",
    "I think we should | probably wait until | the weather gets better.",
    "Turn left at the | second traffic light. | Then keep going straight.",
    "What I really want to know is | whether the train leaves on time.",
    "That sounds great. | Let's meet tomorrow at noon.",
    "Because the meeting ran late, | I missed the bus | and had to walk home.",
    "Please remind me to | buy milk, | eggs, | and bread.",
    "The weather today is sunny. | Tomorrow it will rain.",
    "I was wondering if | you could help me with | something.",
    "We finished the project. | Everyone did a great job.",
]


@dataclass
class Pause:
    source: str
    words: str  # what was said up to the pause
    complete: bool  # the label: a sentence ends here
    probability: float = 0.0


def cut_at_pauses(audio: np.ndarray, wait_s: float = WAIT_S) -> list[np.ndarray]:
    """The audio up to `wait_s` after each speech region's end (zero-padded past the recording's end)."""
    cuts = []
    for segment in speech_segments(audio, SEGMENTS):
        end = segment.end_sample + int(wait_s * SAMPLE_RATE)
        cut = audio[:end]
        cuts.append(np.concatenate([cut, np.zeros(end - len(cut), np.float32)]))
    return cuts


def labelled(source: str, chunks: list[str], audio: np.ndarray) -> list[tuple[Pause, np.ndarray]] | None:
    """Pauses after each chunk of words, or None if VAD finds another number of pauses."""
    cuts = cut_at_pauses(audio)
    if len(cuts) != len(chunks):
        return None
    said = [" ".join(chunks[: i + 1]) for i in range(len(chunks))]
    return [
        (Pause(source, text, text.rstrip().endswith((".", "?", "!"))), cut)
        for text, cut in zip(said, cuts, strict=True)
    ]


def espeak(text: str) -> np.ndarray:
    ssml = text.replace("|", '<break time="700ms"/>')
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-m", "-w", str(path), ssml], check=True, capture_output=True)
        return decode_audio(path, max_duration_s=600)


def pauses() -> tuple[list[tuple[Pause, np.ndarray]], list[str]]:
    found = labelled("jfk.flac", JFK_WORDS, recording("jfk.flac"))
    assert found is not None, "VAD no longer finds jfk.flac's three pauses"
    skipped = []
    if shutil.which("espeak-ng") is None:
        skipped.append("all synthetic texts (espeak-ng is not installed)")
        return found, skipped
    for i, text in enumerate(SYNTHETIC):
        chunks = [c.strip() for c in text.split("|")]
        items = labelled(f"espeak-ng {i + 1}", chunks, espeak(text))
        if items is None:
            skipped.append(text)
        else:
            found += items
    return found, skipped


def cost(model: SmartTurnModel, windows: np.ndarray, batch: int, repeats: int) -> dict[str, float]:
    rows = windows[np.arange(batch) % len(windows)]
    model.predict_windows(rows)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        model.predict_windows(rows)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    features = time.process_time()
    for _ in range(repeats):
        log_mel(rows)
    features = time.process_time() - features
    return {
        "batch": batch,
        "cpu_ms_per_call": 1000 * cpu / repeats,
        "features_cpu_ms_per_call": 1000 * features / repeats,
        "cpu_ms_per_recording": 1000 * cpu / repeats / batch,
        "wall_ms_per_call": 1000 * wall / repeats,
    }


def stability(model: SmartTurnModel, sources: list[np.ndarray]) -> list[dict[str, Any]]:
    """Per wait after the speech's end: how far a nudge of `NUDGE` to the features moves each reading."""
    rng = np.random.default_rng(0)
    rows = []
    for wait_ms in STABILITY_WAITS_MS:
        cuts = [cut for audio in sources for cut in cut_at_pauses(audio, wait_ms / 1000)]
        features = log_mel(np.stack([model_window(cut) for cut in cuts]))
        base = model.predict_features(features)
        nudged = [
            model.predict_features((features * (1 + NUDGE * rng.standard_normal(features.shape))).astype(np.float32))
            for _ in range(NUDGES)
        ]
        moved = np.max(np.abs(np.stack(nudged) - base), axis=0)
        middle = (base > 0.2) & (base < 0.8)
        rows.append(
            {
                "wait_ms": wait_ms,
                "pauses": len(cuts),
                "moved_median": float(np.median(moved)),
                "moved_max": float(moved.max()),
                "pauses_moved_over_0.05": int((moved > 0.05).sum()),
                "readings_between_0.2_and_0.8": int(middle.sum()),
                "probabilities": base.tolist(),
                "moved": moved.tolist(),
            }
        )
    return rows


def decisions(found: list[Pause], threshold: float) -> dict[str, float | int]:
    ends = [p for p in found if p.complete]
    inside = [p for p in found if not p.complete]
    ends_hit = sum(p.probability >= threshold for p in ends)
    inside_cut = sum(p.probability >= threshold for p in inside)
    return {
        "threshold": threshold,
        "ends": len(ends),
        "ends_called_complete": ends_hit,
        "inside": len(inside),
        "inside_called_complete": inside_cut,
        "accuracy": (ends_hit + len(inside) - inside_cut) / len(found),
    }


def measure(
    model: SmartTurnModel,
    windows: np.ndarray,
    found: list[tuple[Pause, np.ndarray]],
    sources: list[np.ndarray],
    repeats: int,
) -> dict[str, Any]:
    """One precision's cost by batch size, its decisions at the labelled pauses, and its stability."""
    costs = [cost(model, windows, batch, repeats) for batch in BATCHES]
    probabilities = model.predict([cut for _, cut in found])
    labelled_pauses = [
        replace(pause, probability=p) for (pause, _), p in zip(found, probabilities.tolist(), strict=True)
    ]
    groups = {
        "real (jfk.flac)": [p for p in labelled_pauses if p.source == "jfk.flac"],
        "synthetic (espeak-ng)": [p for p in labelled_pauses if p.source != "jfk.flac"],
    }
    return {
        "costs": costs,
        "accuracy": {name: [decisions(group, t) for t in THRESHOLDS] for name, group in groups.items() if group},
        "stability": stability(model, sources),
        "pauses": [asdict(p) for p in labelled_pauses],
    }


def table(runs: dict[Precision, dict[str, Any]]) -> str:
    lines = [
        results.markdown_table(
            ["precision", "batch", "CPU ms / call", "of which features", "CPU ms / recording", "wall ms / call"],
            [
                [
                    precision,
                    c["batch"],
                    f"{c['cpu_ms_per_call']:.1f}",
                    f"{c['features_cpu_ms_per_call']:.1f}",
                    f"{c['cpu_ms_per_recording']:.1f}",
                    f"{c['wall_ms_per_call']:.1f}",
                ]
                for precision, run in runs.items()
                for c in run["costs"]
            ],
        ),
        "",
    ]
    rows = []
    for precision, run in runs.items():
        for name, per_threshold in run["accuracy"].items():
            for d in per_threshold:
                rows.append(
                    [
                        precision,
                        name,
                        d["threshold"],
                        f"{d['ends_called_complete']} / {d['ends']}",
                        f"{d['inside_called_complete']} / {d['inside']}",
                        f"{100 * d['accuracy']:.0f} %",
                    ]
                )
    header = [
        "precision",
        "speech",
        "threshold",
        "sentence ends called complete",
        "pauses inside called complete",
        "accuracy",
    ]
    lines.append(results.markdown_table(header, rows))
    lines.append("")
    header = [
        "precision",
        "asked after speech end",
        "pauses",
        "moved by a 1e-6 nudge: median",
        "max",
        "pauses moved > 0.05",
        "readings in 0.2–0.8",
    ]
    body = [
        [
            precision,
            f"{r['wait_ms']} ms",
            r["pauses"],
            f"{r['moved_median']:.4f}",
            f"{r['moved_max']:.3f}",
            r["pauses_moved_over_0.05"],
            r["readings_between_0.2_and_0.8"],
        ]
        for precision, run in runs.items()
        for r in run["stability"]
    ]
    lines.append(results.markdown_table(header, body))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="model calls timed per batch size")
    args = parser.parse_args()

    sources = [recording("jfk.flac"), recording("silero_test.wav")]
    windows = np.stack([model_window(a[: end * SAMPLE_RATE]) for a in sources for end in (4, 8, 11)])
    found, skipped = pauses()
    runs = {
        precision: measure(SmartTurnModel(precision=precision), windows, found, sources, args.repeats)
        for precision in PRECISIONS
    }
    data = {
        "machine": results.machine() | {"onnxruntime": onnxruntime.__version__},
        "precisions": runs,
        "skipped_texts": skipped,
    }
    out = results.directory
    out.mkdir(parents=True, exist_ok=True)
    (out / "turn_model.json").write_text(json.dumps(data, indent=2) + "\n")
    text = table(runs)
    (out / "turn_model.md").write_text(text + "\n")
    print(text)
    for i, pause in enumerate(runs["int8"]["pauses"]):
        readings = "  ".join(f"{run['pauses'][i]['probability']:.3f}" for run in runs.values())
        print(f"{readings}  {'END   ' if pause['complete'] else 'inside'}  {pause['source']}: {pause['words']}")
    if skipped:
        print("skipped:", *skipped, sep="\n  ")


if __name__ == "__main__":
    main()
