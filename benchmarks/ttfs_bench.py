"""Time to final segment (TTFS): speech end → the final transcript, by turn detection mode.

The number voice-agent builders compare speech services by. Each mode runs its own edge in front
of the same vLLM, warmed up first; N sessions stream speech with pauses (`benchmarks.speech`) at 1x
in small appends, as a microphone does. Per turn (matched to the utterance sent): speech end in
the audio → `speech_stopped` (the VAD's lag and the silence window, or the turn model's verdict),
`speech_stopped` → `…transcription.completed` (the model time left after the turn's end: eager
finals make it small), and their sum, TTFS. The edge's share of a turn's time after its end and
its backend part come from `edge_realtime_turn_seconds` between two scrapes; eager transcriptions
used and discarded, and turn-model checks, from their counters.

With `realtime_vllm_url` (a vLLM serving the tiny Voxtral Realtime model) it runs `STREAM_MODES`
instead, into `results/ttfs_stream.*`: the streaming engine with server VAD, its finals waiting for
vLLM's `transcription.done` (the 17 steps of right padding) and at the default margin.
"""

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tqdm import tqdm

from benchmarks import processes, results
from benchmarks.procstats import ProcessMeter
from benchmarks.realtime_client import (
    SERVER_VAD,
    SessionLog,
    append_message,
    run_many,
    score_session,
    transcription_update,
)
from benchmarks.speech import SessionAudio
from benchmarks.stats import counter_delta, histogram_quantiles, percentiles, scrape


@dataclass(frozen=True)
class Mode:
    name: str
    turn_detection: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)


MODES = (
    Mode("server_vad 500 ms", SERVER_VAD, {"realtime_eager_pause_ms": 0}),
    Mode("server_vad 500 ms + eager finals", SERVER_VAD),
    Mode("server_vad 200 ms", {**SERVER_VAD, "silence_duration_ms": 200}, {"realtime_eager_pause_ms": 0}),
    Mode("server_vad 200 ms + eager finals", {**SERVER_VAD, "silence_duration_ms": 200}),
    Mode("semantic_vad high (Smart Turn), eager at the pause", {"type": "semantic_vad", "eagerness": "high"}),
    Mode(
        "semantic_vad high (Smart Turn), eager after the check",
        {"type": "semantic_vad", "eagerness": "high"},
        {"semantic_eager": "after_check"},
    ),
    Mode(
        "semantic_vad high (Smart Turn float32), eager at the pause",
        {"type": "semantic_vad", "eagerness": "high"},
        {"smart_turn_precision": "float32"},
    ),
)


# A margin no padding step reaches: the final waits for vLLM's done, as the streaming engine did.
AT_DONE = {"realtime_stream_margin_ms": 60_000}
STREAM_MODES = (
    Mode("stream, server_vad 500 ms, final at vLLM's done", SERVER_VAD, AT_DONE),
    Mode("stream, server_vad 500 ms", SERVER_VAD),
    Mode("stream, server_vad 200 ms, final at vLLM's done", {**SERVER_VAD, "silence_duration_ms": 200}, AT_DONE),
    Mode("stream, server_vad 200 ms", {**SERVER_VAD, "silence_duration_ms": 200}),
)


@dataclass(frozen=True)
class Load:
    seconds: float = 30.0
    chunk_ms: int = 20
    drain_s: float = 20.0
    ramp_s: float = 2.0


def measure(
    edge: processes.Child, mode: Mode, n: int, audio: SessionAudio, load: Load, seed: int = 0
) -> dict[str, Any]:
    ws_url = edge.url.replace("http", "ws", 1) + "/v1/realtime?intent=transcription"
    plans = [audio.plan(load.seconds, seed + i) for i in range(n)]
    update = transcription_update(mode.turn_detection)
    before = scrape(edge.url)
    with ProcessMeter(edge.pid) as meter:
        logs = asyncio.run(
            run_many(
                ws_url,
                plans,
                audio.messages,
                load.chunk_ms / 1000,
                load.drain_s,
                load.ramp_s,
                lambda: SessionLog(session_update=update),
            )
        )
    after = scrape(edge.url)
    scores = [score_session(plan, log) for plan, log in zip(plans, logs, strict=True)]
    return {
        "mode": asdict(mode),
        "sessions": n,
        "turns_sent": sum(s.expected for s in scores),
        "turns_completed": sum(s.matched for s in scores),
        "turns_failed": sum(s.failed for s in scores),
        "sessions_dropped": sum(1 for log in logs if log.dropped),
        "ttfs_s": percentiles([v for s in scores for v in s.latencies_s]),
        "speech_end_to_stopped_s": percentiles([v for s in scores for v in s.vad_lag_s]),
        "stopped_to_completed_s": percentiles([v for s in scores for v in s.stop_to_done_s]),
        "edge_share_s": histogram_quantiles(before, after, "edge_realtime_turn_seconds", part="edge"),
        "backend_after_end_s": histogram_quantiles(before, after, "edge_realtime_turn_seconds", part="backend"),
        "eager": {
            outcome: counter_delta(before, after, "edge_realtime_eager_transcriptions_total", outcome=outcome)
            for outcome in ("used", "discarded")
        },
        "turn_check_s": histogram_quantiles(before, after, "edge_realtime_turn_check_seconds"),
        "turn_checks": {
            outcome: counter_delta(before, after, "edge_realtime_turn_checks_total", outcome=outcome)
            for outcome in ("complete", "incomplete", "failed")
        },
        # The edge's own CPU (VAD, turn model, protocol) over the run, per second of audio sent.
        "edge_cpu_ms_per_session_s": 1000 * meter.cpu_s / (n * load.seconds),
    }


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "mode",
        "sessions",
        "turns completed / sent",
        "TTFS p50 / p95 / p99 ms",
        "speech end → stopped p50 ms",
        "stopped → completed p50 / p95 ms",
        "edge share p50 / p99 ms",
        "eager used / discarded",
        "turn checks complete / incomplete",
        "turn check p50 / p95 ms",
        "edge CPU ms per session-second",
    ]
    body = []
    for r in rows:
        ttfs, stop, done, edge = (
            r["ttfs_s"],
            r["speech_end_to_stopped_s"],
            r["stopped_to_completed_s"],
            r["edge_share_s"],
        )
        body.append(
            [
                r["mode"]["name"],
                r["sessions"],
                f"{r['turns_completed']} / {r['turns_sent']}",
                f"{results.ms(ttfs['p50'])} / {results.ms(ttfs['p95'])} / {results.ms(ttfs['p99'])}",
                results.ms(stop["p50"]),
                f"{results.ms(done['p50'])} / {results.ms(done['p95'])}",
                f"{results.ms(edge['p50'])} / {results.ms(edge['p99'])}",
                f"{r['eager']['used']:.0f} / {r['eager']['discarded']:.0f}",
                f"{r['turn_checks']['complete']:.0f} / {r['turn_checks']['incomplete']:.0f}",
                f"{results.ms(r['turn_check_s']['p50'])} / {results.ms(r['turn_check_s']['p95'])}",
                f"{r['edge_cpu_ms_per_session_s']:.1f}",
            ]
        )
    return results.markdown_table(header, body)


def plot(rows: list[dict[str, Any]]):
    figure, axis = plt.subplots(figsize=(10, 4.5))
    labels = [f"{r['mode']['name']}\n{r['sessions']} sessions" for r in rows]
    stopped = [(r["speech_end_to_stopped_s"]["p50"] or 0) * 1000 for r in rows]
    done = [(r["stopped_to_completed_s"]["p50"] or 0) * 1000 for r in rows]
    axis.barh(labels, stopped, label="speech end → speech_stopped (p50)")
    axis.barh(labels, done, left=stopped, label="speech_stopped → completed (p50)")
    axis.set_xlabel("ms")
    axis.legend(fontsize=8)
    axis.tick_params(axis="y", labelsize=7)
    axis.set_title("Time to final segment")
    return figure


def run(vllm_url: str, levels: list[int], load: Load, backend: str, realtime_vllm_url: str | None = None) -> None:
    audio = SessionAudio(load.chunk_ms, append_message)
    rows = []
    modes: tuple[Mode, ...] = MODES
    name, engine = "ttfs", {}
    if realtime_vllm_url:
        modes, name = STREAM_MODES, "ttfs_stream"
        engine = {"realtime_engine": "stream", "realtime_vllm_url": realtime_vllm_url}
    for index, mode in enumerate(modes):
        with processes.edge(vllm_url, **engine, **mode.settings) as edge:
            if index == 0:  # a cold vLLM takes its first requests of each shape far slower
                measure(edge, mode, 2, audio, Load(min(load.seconds, 15.0), load.chunk_ms))
            for n in levels:
                row = measure(edge, mode, n, audio, load)
                rows.append(row)
                tqdm.write(
                    f"  {mode.name}, N={n}: TTFS p50 {results.ms(row['ttfs_s']['p50'])} ms, "
                    f"turns {row['turns_completed']}/{row['turns_sent']}, eager {row['eager']}"
                )
    data = {"benchmark": name, "machine": results.machine(), "backend": backend, "load": asdict(load), "rows": rows}
    results.write(name, data, table(rows), plot(rows))
    tqdm.write(table(rows))
