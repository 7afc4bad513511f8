"""Conversation sessions (voice agents): spoken turns answered by streamed text replies.

Each client opens `/v1/realtime?model=…` (a conversation session, as the OpenAI SDKs do), sets
`session.type: "realtime"` with text output, `server_vad` (500 ms of silence) and input
transcription, and streams speech with pauses (`benchmarks.speech`) in 100 ms appends. Every turn
starts a response (`create_response`); speech during a reply cancels it (`interrupt_response`).

The sweep: per N sessions at 1x, speech end in the audio → the reply's first
`response.output_text.delta` at the client, `speech_stopped` → first delta, and the edge's share of
a response's first delta apart from vLLM's (`edge_realtime_response_first_delta_seconds{part}`
between two scrapes of `/metrics`), until a budget breaks.

The long conversation: a few sessions talk for `minutes` of audio sent `speed` times faster than
real time; the edge's resident memory is sampled as their conversations grow, so the memory a
session holds after half an hour of talk can be read off (its audio, transcripts and replies are
bounded by `REALTIME_AUDIO_TURNS` and `REALTIME_CONVERSATION_MAX_MB`).
"""

import asyncio
import json
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import psutil
from tqdm import tqdm

from benchmarks import results
from benchmarks.procstats import ProcessMeter
from benchmarks.realtime_client import SessionLog, append_message, heard_turns, run_many
from benchmarks.speech import SessionAudio, SessionPlan
from benchmarks.stats import counter_delta, histogram_quantiles, percentiles, scrape

FIRST_DELTA = "edge_realtime_response_first_delta_seconds"
STATUSES = ("completed", "incomplete", "cancelled", "failed")


def session_update(reply_tokens: int, interrupt: bool = True) -> str:
    return json.dumps(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "output_modalities": ["text"],
                "instructions": "You are a helpful voice assistant. Answer briefly.",
                "max_output_tokens": reply_tokens,
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "whisper-1"},
                        "turn_detection": {
                            "type": "server_vad",
                            "silence_duration_ms": 500,
                            "create_response": True,
                            "interrupt_response": interrupt,
                        },
                    }
                },
            },
        }
    )


@dataclass
class ConversationLog(SessionLog):
    """A transcription log plus each turn's response: the turn it answers (the last one stopped
    when it was created), its first text delta's arrival and its final status."""

    answers: dict[str, str] = field(default_factory=dict)  # response id → item id
    first_delta: dict[str, float] = field(default_factory=dict)  # item id → arrival
    status: dict[str, str] = field(default_factory=dict)  # item id → response status
    _last_stopped: str | None = None

    def record(self, event: dict, now: float) -> None:
        super().record(event, now)
        kind = event["type"]
        if kind == "input_audio_buffer.speech_stopped":
            self._last_stopped = event["item_id"]
        elif kind == "response.created" and self._last_stopped is not None:
            self.answers[event["response"]["id"]] = self._last_stopped
        elif kind == "response.output_text.delta" and (item := self.answers.get(event["response_id"])):
            self.first_delta.setdefault(item, now)
        elif kind == "response.done" and (item := self.answers.get(event["response"]["id"])):
            self.status[item] = event["response"]["status"]

    def settled(self, turns_sent: int) -> bool:
        return len(self.status) >= max(len(self.stopped), turns_sent)


@dataclass(frozen=True)
class Load:
    seconds: float = 30.0
    chunk_ms: int = 100
    reply_tokens: int = 32
    drain_s: float = 20.0
    ramp_s: float = 2.0


@dataclass(frozen=True)
class Budget:
    reply_p99_s: float = 1.5  # speech end → first reply delta
    edge_p99_s: float | None = None

    def describe(self) -> str:
        edge = "" if self.edge_p99_s is None else f", edge share p99 < {self.edge_p99_s * 1000:.0f} ms"
        return (
            "0 dropped sessions, every heard turn answered (a first reply delta), "
            f"speech end → first delta p99 < {self.reply_p99_s:.1f} s{edge}"
        )


Run = tuple[SessionPlan, ConversationLog]


async def _sessions(
    url: str, n: int, audio: SessionAudio, load: Load, update: str, speed: float = 1.0, seed: int = 0
) -> list[Run]:
    plans = [audio.plan(load.seconds, seed + i) for i in range(n)]
    logs = await run_many(
        url,
        plans,
        audio.messages,
        load.chunk_ms / 1000,
        load.drain_s,
        load.ramp_s,
        lambda: ConversationLog(session_update=update),
        speed,
    )
    return [(plan, cast(ConversationLog, log)) for plan, log in zip(plans, logs, strict=True)]


def _score(runs: list[Run], speed: float = 1.0) -> dict[str, Any]:
    reply, stop_to_reply, vad_lag = [], [], []
    heard = answered = 0
    statuses = dict.fromkeys(STATUSES, 0)
    for plan, log in runs:
        for turn in heard_turns(plan, log, speed):
            heard += 1
            vad_lag.append(turn.stopped_at - turn.spoken_end)
            if (first := log.first_delta.get(turn.item_id)) is not None:
                answered += 1
                reply.append(first - turn.spoken_end)
                stop_to_reply.append(first - turn.stopped_at)
        for status in log.status.values():
            statuses[status] = statuses.get(status, 0) + 1
    dropped = [log.dropped for _, log in runs if log.dropped]
    return {
        "turns_sent": sum(len(plan.turns_ms) for plan, _ in runs),
        "turns_heard": heard,
        "turns_answered": answered,
        "transcripts_completed": sum(len(log.completed) for _, log in runs),
        "responses": statuses,
        "sessions_dropped": len(dropped),
        "drop_reasons": sorted(set(dropped))[:5],
        "error_events": sorted({code for _, log in runs for code in log.errors})[:5],
        "speech_end_to_first_delta_s": percentiles(reply),
        "stopped_to_first_delta_s": percentiles(stop_to_reply),
        "vad_lag_s": percentiles(vad_lag),
    }


def run_point(edge_url: str, n: int, audio: SessionAudio, load: Load, pids: dict[str, int]) -> dict[str, Any]:
    ws_url = edge_url.replace("http", "ws", 1) + "/v1/realtime?model=voxtral"  # an alias of the served model
    before = scrape(edge_url)
    meters = {name: ProcessMeter(pid) for name, pid in pids.items()}
    with ExitStack() as stack:
        for meter in meters.values():
            stack.enter_context(meter)
        runs = asyncio.run(_sessions(ws_url, n, audio, load, session_update(load.reply_tokens)))
    after = scrape(edge_url)
    point = {"sessions": n, **_score(runs)}
    point["edge_share_s"] = histogram_quantiles(before, after, FIRST_DELTA, part="edge")
    point["backend_first_delta_s"] = histogram_quantiles(before, after, FIRST_DELTA, part="backend")
    point["responses_counted"] = counter_delta(before, after, f"{FIRST_DELTA}_count", part="edge")
    point["processes"] = {name: meter.summary() for name, meter in meters.items()}
    return point


def passes(point: dict[str, Any], budget: Budget) -> bool:
    p99 = point["speech_end_to_first_delta_s"]["p99"]
    edge_p99 = point["edge_share_s"]["p99"]
    return (
        not point["sessions_dropped"]
        and point["turns_heard"] > 0
        and point["turns_answered"] == point["turns_heard"]
        and p99 is not None
        and p99 < budget.reply_p99_s
        and (budget.edge_p99_s is None or (edge_p99 is not None and edge_p99 < budget.edge_p99_s))
    )


def sweep(
    edge_url: str, levels: list[int], budget: Budget, load: Load, pids: dict[str, int]
) -> tuple[list[dict[str, Any]], int | None]:
    audio = SessionAudio(load.chunk_ms, append_message)
    # A cold vLLM takes its first requests of each shape far slower (issue 23): warm it up first.
    if levels:
        run_point(edge_url, 2, audio, replace(load, seconds=min(load.seconds, 15.0)), {})
    points, best = [], None
    for n in levels:
        point = run_point(edge_url, n, audio, load, pids)
        point["passed"] = passes(point, budget)
        points.append(point)
        reply = point["speech_end_to_first_delta_s"]
        tqdm.write(
            f"  N={n}: speech end → first delta p50/p99 {results.ms(reply['p50'])}/{results.ms(reply['p99'])} ms, "
            f"edge share p99 {results.ms(point['edge_share_s']['p99'])} ms, "
            f"answered {point['turns_answered']}/{point['turns_heard']}, responses {point['responses']}, "
            f"dropped {point['sessions_dropped']} → {'ok' if point['passed'] else 'over budget'}"
        )
        if not point["passed"]:
            break
        best = n
    return points, best


class MemorySampler(threading.Thread):
    """The edge's resident memory every `interval_s`, as (seconds since start, MB)."""

    def __init__(self, pid: int, interval_s: float = 2.0) -> None:
        super().__init__(daemon=True)
        self._process = psutil.Process(pid)
        self._interval = interval_s
        self._done = threading.Event()
        self.samples: list[tuple[float, float]] = []
        self._t0 = time.perf_counter()

    def run(self) -> None:
        while True:
            self.samples.append((time.perf_counter() - self._t0, self._process.memory_info().rss / 2**20))
            if self._done.wait(self._interval):
                return

    def stop(self) -> list[tuple[float, float]]:
        self._done.set()
        self.join()
        return self.samples


def long_conversation(
    edge_url: str, edge_pid: int | None, sessions: int, minutes: float, speed: float, load: Load
) -> dict[str, Any]:
    """`sessions` conversations of `minutes` of audio each, sent at `speed`x; the edge's memory."""
    ws_url = edge_url.replace("http", "ws", 1) + "/v1/realtime?model=voxtral"  # an alias of the served model
    audio = SessionAudio(load.chunk_ms, append_message)
    talk = Load(minutes * 60, load.chunk_ms, load.reply_tokens, load.drain_s, ramp_s=1.0)
    sampler = MemorySampler(edge_pid) if edge_pid else None
    if sampler:
        sampler.start()
    started = time.perf_counter()
    runs = asyncio.run(_sessions(ws_url, sessions, audio, talk, session_update(load.reply_tokens), speed, seed=100))
    wall = time.perf_counter() - started
    samples = sampler.stop() if sampler else []
    score = _score(runs, speed)
    # First-delta latency early and late in the conversation: the prompt grows with it.
    early, late = [], []
    for plan, log in runs:
        for turn in heard_turns(plan, log, speed):
            if (first := log.first_delta.get(turn.item_id)) is None:
                continue
            audio_s = (turn.spoken_end - log.t0) * speed
            if audio_s < talk.seconds / 6:
                early.append(first - turn.stopped_at)
            elif audio_s > talk.seconds * 5 / 6:
                late.append(first - turn.stopped_at)
    memory: dict[str, Any] = {}
    if samples:
        start_mb, end_mb = samples[0][1], samples[-1][1]
        peak_mb = max(mb for _, mb in samples)
        memory = {
            "rss_start_mb": round(start_mb, 1),
            "rss_end_mb": round(end_mb, 1),
            "rss_peak_mb": round(peak_mb, 1),
            "per_session_peak_growth_mb": round((peak_mb - start_mb) / sessions, 2),
            "samples": [(round(t, 1), round(mb, 1)) for t, mb in samples],
        }
    return {
        "sessions": sessions,
        "audio_minutes": minutes,
        "speed": speed,
        "wall_s": round(wall, 1),
        **score,
        "stopped_to_first_delta_first_sixth_s": percentiles(early),
        "stopped_to_first_delta_last_sixth_s": percentiles(late),
        "memory": memory,
    }


def table(points: list[dict[str, Any]]) -> str:
    header = [
        "sessions",
        "answered / heard",
        "completed / incomplete / cancelled / failed",
        "dropped",
        "speech end → first delta p50 / p99 ms",
        "stopped → first delta p50 / p99 ms",
        "edge share p50 / p99 ms",
        "vLLM first delta p50 / p99 ms",
        "edge CPU cores",
        "vLLM CPU cores",
        "within budget",
    ]
    rows = []
    for p in points:
        reply, stop, edge, backend = (
            p["speech_end_to_first_delta_s"],
            p["stopped_to_first_delta_s"],
            p["edge_share_s"],
            p["backend_first_delta_s"],
        )
        rows.append(
            [
                p["sessions"],
                f"{p['turns_answered']} / {p['turns_heard']}",
                " / ".join(str(p["responses"].get(s, 0)) for s in STATUSES),
                p["sessions_dropped"],
                f"{results.ms(reply['p50'])} / {results.ms(reply['p99'])}",
                f"{results.ms(stop['p50'])} / {results.ms(stop['p99'])}",
                f"{results.ms(edge['p50'])} / {results.ms(edge['p99'])}",
                f"{results.ms(backend['p50'])} / {results.ms(backend['p99'])}",
                p["processes"].get("edge", {}).get("cpu_cores", "–"),
                p["processes"].get("vllm", {}).get("cpu_cores", "–"),
                "yes" if p["passed"] else "no",
            ]
        )
    return results.markdown_table(header, rows)


def long_table(long: dict[str, Any]) -> str:
    memory = long["memory"]
    early, late = long["stopped_to_first_delta_first_sixth_s"], long["stopped_to_first_delta_last_sixth_s"]
    header = [
        "sessions × audio",
        "sent at",
        "answered / heard",
        "completed / incomplete / cancelled / failed",
        "dropped",
        "edge RSS start / peak / end MB",
        "peak growth per session MB",
        "stopped → first delta p50, first / last sixth ms",
    ]
    row = [
        f"{long['sessions']} × {long['audio_minutes']:g} min",
        f"{long['speed']:g}x",
        f"{long['turns_answered']} / {long['turns_heard']}",
        " / ".join(str(long["responses"].get(s, 0)) for s in STATUSES),
        long["sessions_dropped"],
        f"{memory.get('rss_start_mb', '–')} / {memory.get('rss_peak_mb', '–')} / {memory.get('rss_end_mb', '–')}",
        memory.get("per_session_peak_growth_mb", "–"),
        f"{results.ms(early['p50'])} / {results.ms(late['p50'])}",
    ]
    return results.markdown_table(header, [row])


def plot(points: list[dict[str, Any]], long: dict[str, Any] | None):
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    ns = [p["sessions"] for p in points]
    for key, label in (
        ("speech_end_to_first_delta_s", "speech end → first delta"),
        ("backend_first_delta_s", "vLLM first delta"),
        ("edge_share_s", "edge share"),
    ):
        for q, style in (("p50", "-"), ("p99", "--")):
            left.plot(ns, [(p[key][q] or float("nan")) * 1000 for p in points], style, marker="o", label=f"{label} {q}")
    left.set_xlabel("concurrent conversation sessions (1x)")
    left.set_ylabel("ms")
    left.set_yscale("log")
    left.legend(fontsize=7)
    left.set_title("First reply delta")
    if long and long["memory"]:
        times, mbs = zip(*long["memory"]["samples"], strict=True)
        right.plot([t * long["speed"] / 60 for t in times], mbs, color="tab:blue")
        right.set_xlabel("conversation audio, minutes")
        right.set_ylabel("edge RSS MB")
        right.set_title(f"Edge memory, {long['sessions']} sessions")
    return figure


@dataclass(frozen=True)
class Sweep:
    """One sweep's edge (and what to meter), load levels and budget."""

    title: str
    edge_url: str
    pids: dict[str, int]
    levels: list[int]
    budget: Budget


@dataclass(frozen=True)
class LongTalk:
    """The long conversation: on a fresh edge of its own (`pid` metered), so its memory is its own."""

    edge_url: str
    pid: int
    sessions: int
    minutes: float
    speed: float


def run(long_talk: LongTalk, alone: Sweep, real: Sweep, load: Load) -> None:
    """The long conversation's memory and the edge alone (its share), against the stand-in backend,
    then the real vLLM sweep; one results file."""
    long: dict[str, Any] | None = None
    if long_talk.minutes > 0 and long_talk.sessions > 0:
        tqdm.write(f"== long conversation, {alone.title}")
        long = long_conversation(
            long_talk.edge_url, long_talk.pid, long_talk.sessions, long_talk.minutes, long_talk.speed, load
        )
        tqdm.write(long_table(long))
    sweeps: list[dict[str, Any]] = []
    for one in (alone, real):
        tqdm.write(f"== {one.title}")
        points, best = sweep(one.edge_url, one.levels, one.budget, load, one.pids)
        sweeps.append({"title": one.title, "budget": one.budget.describe(), "points": points, "best": best})
    data = {
        "benchmark": "conversation",
        "machine": results.machine(),
        "setup": {"edge": "python -m uvicorn server.api.app:create_app --factory (1 process)"},
        "load": asdict(load),
        "sweeps": sweeps,
        "long_conversation": long,
    }
    parts = []
    for entry in sweeps:
        summary = (
            f"Largest N within budget ({entry['budget']}): {entry['best'] if entry['best'] is not None else 'none'}"
        )
        parts.append(f"{table(entry['points'])}\n\n{entry['title']}. {summary}")
    if long:
        parts.append(f"{long_table(long)}\n\nLong conversation, {alone.title}.")
    results.write("conversation", data, "\n\n".join(parts), plot(sweeps[-1]["points"], long))
    tqdm.write("\n\n".join(parts))
