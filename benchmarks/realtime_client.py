"""A lean OpenAI Realtime client that streams a session plan at real-time pace.

Chunk k (audio [k·c, (k+1)·c)) is sent at t0 + (k+1)·c, as a microphone would deliver it, on an
absolute schedule so delays never accumulate. What the server says is recorded with the time it
arrived; scoring happens afterwards (`score_session`).
"""

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import websockets

from benchmarks.speech import SessionPlan

SERVER_VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}


def transcription_update(turn_detection: dict) -> str:
    """A transcription session's `session.update`: PCM16 at 24 kHz, this turn detection."""
    audio_input = {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": turn_detection}
    return json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_input}}})


SESSION_UPDATE = transcription_update(SERVER_VAD)
STOPPED = "input_audio_buffer.speech_stopped"
COMPLETED = "conversation.item.input_audio_transcription.completed"
FAILED = "conversation.item.input_audio_transcription.failed"
OPEN_TIMEOUT_S = 30.0


def append_message(pcm16: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm16).decode()})


@dataclass
class SessionLog:
    """What one transcription session saw; times are `time.perf_counter()` seconds. A subclass
    for another kind of session records more (`record`) and says when it has all it waits for."""

    t0: float = 0.0
    stopped: dict[str, tuple[int, float]] = field(default_factory=dict)  # item → (audio_end_ms, arrival)
    completed: dict[str, float] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dropped: str | None = None
    max_send_lag_s: float = 0.0
    session_update: str = SESSION_UPDATE

    def record(self, event: dict, now: float) -> None:
        kind = event["type"]
        if kind == STOPPED:
            self.stopped[event["item_id"]] = (event["audio_end_ms"], now)
        elif kind == COMPLETED:
            self.completed[event["item_id"]] = now
        elif kind == FAILED:
            self.failed.append(event["item_id"])
        elif kind == "error":
            self.errors.append(event["error"].get("code") or event["error"].get("message", ""))

    def settled(self, turns_sent: int) -> bool:
        """Every turn heard (or sent) has its outcome."""
        return len(self.completed) + len(self.failed) >= max(len(self.stopped), turns_sent)


async def _read(ws: websockets.ClientConnection, log: SessionLog) -> None:
    async for raw in ws:
        log.record(json.loads(raw), time.perf_counter())


async def _expect(ws: websockets.ClientConnection, kind: str) -> None:
    event = json.loads(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S))
    if event["type"] != kind:
        raise RuntimeError(f"expected {kind}, got {event['type']}: {event}")


async def run_session(
    url: str,
    plan: SessionPlan,
    messages: list[str],
    chunk_s: float,
    drain_s: float,
    log: SessionLog | None = None,
    speed: float = 1.0,
) -> SessionLog:
    """Stream `plan` at `speed` times real time, then wait up to `drain_s` until `log` has settled
    (a fresh `SessionLog`: every detected turn's transcript); never raises."""
    log = SessionLog() if log is None else log
    try:
        async with websockets.connect(
            url, compression=None, max_size=None, open_timeout=OPEN_TIMEOUT_S, ping_interval=None
        ) as ws:
            await _expect(ws, "session.created")
            await ws.send(log.session_update)
            await _expect(ws, "session.updated")
            reader = asyncio.create_task(_read(ws, log))
            log.t0 = time.perf_counter()
            for k, index in enumerate(plan.chunks):
                delay = log.t0 + (k + 1) * chunk_s / speed - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    log.max_send_lag_s = max(log.max_send_lag_s, -delay)
                await ws.send(messages[index])
            deadline = time.perf_counter() + drain_s
            while time.perf_counter() < deadline and not reader.done():
                if log.settled(len(plan.turns_ms)):
                    break
                await asyncio.sleep(0.05)
            if reader.done():
                if (failure := reader.exception()) is not None:
                    raise failure
                why = f", error {log.errors[-1]}" if log.errors else ""
                raise RuntimeError(f"the server closed the session early (code {ws.close_code}{why})")
            reader.cancel()
    except (TimeoutError, OSError, websockets.WebSocketException, RuntimeError) as exc:
        log.dropped = f"{type(exc).__name__}: {exc}"
    return log


async def run_many(
    url: str,
    plans: list[SessionPlan],
    messages: list[str],
    chunk_s: float,
    drain_s: float,
    ramp_s: float,
    make_log: Callable[[], SessionLog],
    speed: float = 1.0,
) -> list[SessionLog]:
    """One session per plan, session i starting `ramp_s * i / len(plans)` in; their logs."""

    async def one(i: int) -> SessionLog:
        await asyncio.sleep(ramp_s * i / len(plans))
        return await run_session(url, plans[i], messages, chunk_s, drain_s, make_log(), speed)

    return list(await asyncio.gather(*(one(i) for i in range(len(plans)))))


@dataclass
class SessionScore:
    expected: int
    detected: int
    matched: int
    failed: int
    latencies_s: list[float]  # speech end in the audio → completed
    stop_to_done_s: list[float]  # speech_stopped arrival → completed arrival
    vad_lag_s: list[float]  # speech end in the audio → speech_stopped arrival


@dataclass(frozen=True)
class HeardTurn:
    """A detected turn matched to the utterance it is; times as in `SessionLog`."""

    item_id: str
    spoken_end: float  # when a microphone would have delivered the utterance's last audio
    stopped_at: float  # speech_stopped's arrival


def heard_turns(plan: SessionPlan, log: SessionLog, speed: float = 1.0, tolerance_ms: int = 700) -> list[HeardTurn]:
    """Match detected turns to the utterances sent, by where the server says each turn ended."""
    heard = []
    unmatched = list(plan.turns_ms)
    for item, (end_ms, stopped_at) in sorted(log.stopped.items(), key=lambda kv: kv[1][0]):
        candidates = [turn for turn in unmatched if abs(turn[1] - end_ms) <= tolerance_ms]
        if not candidates:
            continue
        turn = min(candidates, key=lambda t: abs(t[1] - end_ms))
        unmatched.remove(turn)
        heard.append(HeardTurn(item, log.t0 + turn[1] / 1000 / speed, stopped_at))
    return heard


def score_session(plan: SessionPlan, log: SessionLog) -> SessionScore:
    latencies, stop_to_done, vad_lag = [], [], []
    matched = 0
    for turn in heard_turns(plan, log):
        item, spoken_end, stopped_at = turn.item_id, turn.spoken_end, turn.stopped_at
        vad_lag.append(stopped_at - spoken_end)
        if item in log.completed:
            matched += 1
            latencies.append(log.completed[item] - spoken_end)
            stop_to_done.append(log.completed[item] - stopped_at)
    return SessionScore(
        expected=len(plan.turns_ms),
        detected=len(log.stopped),
        matched=matched,
        failed=len(log.failed),
        latencies_s=latencies,
        stop_to_done_s=stop_to_done,
        vad_lag_s=vad_lag,
    )
