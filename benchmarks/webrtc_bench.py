"""WebRTC calls against WebSocket sessions: the same speech, the same edge, the same vLLM.

N sessions stream speech with pauses (`benchmarks.speech`) at 1x in 20 ms pieces, as a microphone
does: over the WebSocket as `input_audio_buffer.append` messages, over WebRTC as an aiortc peer's
Opus track (48 kHz on the wire) with events on `oai-events`. Per turn: speech end in the audio →
`speech_stopped` and → `…transcription.completed` (TTFS). The edge process's CPU over each run,
divided by the audio the sessions sent, gives its CPU per session-second; one core's worth of
that is the number of sessions a core holds for this part of the work (VAD and the session core
included, vLLM not).

Every candidate is on 127.0.0.1 (the edge's `WEBRTC_HOST_ADDRESSES`, the client's aioice hook);
run it in a network namespace with only loopback (`unshare -n`) to make that certain.
"""

import asyncio
import base64
import fractions
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import aioice.ice
import av
import httpx
import matplotlib
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tqdm import tqdm

from benchmarks import processes, results
from benchmarks.procstats import ProcessMeter
from benchmarks.realtime_client import (
    OPEN_TIMEOUT_S,
    SESSION_UPDATE,
    SessionLog,
    append_message,
    run_many,
    score_session,
)
from benchmarks.speech import SessionAudio, SessionPlan
from benchmarks.stats import percentiles

CHUNK_MS = 20
RATE = SessionAudio.RATE


@dataclass(frozen=True)
class Load:
    seconds: float = 30.0
    drain_s: float = 20.0
    ramp_s: float = 2.0


class PlanTrack(MediaStreamTrack):
    """A microphone playing a session plan: piece k (audio [k·c, (k+1)·c)) is delivered at
    t0 + (k+1)·c, as `realtime_client` sends it over the WebSocket; silence after the plan."""

    kind = "audio"

    def __init__(self, plan: SessionPlan, pieces: list[np.ndarray], log: SessionLog) -> None:
        super().__init__()
        self._plan, self._pieces, self._log = plan, pieces, log
        self._k = 0

    async def recv(self) -> av.AudioFrame:
        if self._k == 0:
            self._log.t0 = time.perf_counter()
        delay = self._log.t0 + (self._k + 1) * CHUNK_MS / 1000 - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            self._log.max_send_lag_s = max(self._log.max_send_lag_s, -delay)
        index = self._plan.chunks[self._k] if self._k < len(self._plan.chunks) else 0
        frame = av.AudioFrame.from_ndarray(self._pieces[index].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._k * len(self._pieces[0])
        frame.time_base = fractions.Fraction(1, RATE)
        self._k += 1
        return frame


async def run_call(edge_url: str, plan: SessionPlan, pieces: list[np.ndarray], load: Load) -> SessionLog:
    """One call streaming `plan`, then waiting up to `drain_s` until every turn has its outcome;
    never raises (a failure is the log's `dropped`)."""
    log = SessionLog()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # none: aiortc's default is Google's STUN
    pc.addTrack(PlanTrack(plan, pieces, log))
    channel = pc.createDataChannel("oai-events")
    configured, ended = asyncio.Event(), asyncio.Event()

    def on_message(text: str) -> None:
        event = json.loads(text)
        if event["type"] == "session.created":
            channel.send(SESSION_UPDATE)
        elif event["type"] == "session.updated":
            configured.set()
        log.record(event, time.perf_counter())

    channel.on("message", on_message)
    channel.on("close", ended.set)
    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=edge_url, timeout=OPEN_TIMEOUT_S) as client:
            answer = await client.post(
                "/v1/realtime/calls", content=pc.localDescription.sdp, headers={"content-type": "application/sdp"}
            )
        if answer.status_code != 201:
            raise RuntimeError(f"offer refused: {answer.status_code} {answer.text[:200]}")
        await pc.setRemoteDescription(RTCSessionDescription(answer.text, "answer"))
        await asyncio.wait_for(configured.wait(), OPEN_TIMEOUT_S)
        while not log.t0:  # the track's first piece starts the clock
            await asyncio.sleep(0.01)
        end = log.t0 + len(plan.chunks) * CHUNK_MS / 1000
        while not ended.is_set() and time.perf_counter() < end + load.drain_s:
            if time.perf_counter() > end and log.settled(len(plan.turns_ms)):
                break
            await asyncio.sleep(0.05)
        if ended.is_set():
            why = f", error {log.errors[-1]}" if log.errors else ""
            raise RuntimeError(f"the server closed the call early{why}")
    except (TimeoutError, OSError, RuntimeError, httpx.HTTPError) as exc:
        log.dropped = f"{type(exc).__name__}: {exc}"
    finally:
        await pc.close()
    return log


async def run_calls(edge_url: str, plans: list[SessionPlan], pieces: list[np.ndarray], load: Load) -> list[SessionLog]:
    async def one(i: int) -> SessionLog:
        await asyncio.sleep(load.ramp_s * i / len(plans))
        return await run_call(edge_url, plans[i], pieces, load)

    return list(await asyncio.gather(*(one(i) for i in range(len(plans)))))


def measure(
    transport: str, edge: processes.Child, n: int, ws_audio: SessionAudio, pieces: list[np.ndarray], load: Load
) -> dict[str, Any]:
    plans = [ws_audio.plan(load.seconds, seed) for seed in range(n)]
    with ProcessMeter(edge.pid) as meter, ProcessMeter(os.getpid(), children=False) as client:
        if transport == "webrtc":
            logs = asyncio.run(run_calls(edge.url, plans, pieces, load))
        else:
            url = edge.url.replace("http", "ws", 1) + "/v1/realtime?intent=transcription"
            logs = asyncio.run(
                run_many(url, plans, ws_audio.messages, CHUNK_MS / 1000, load.drain_s, load.ramp_s, SessionLog)
            )
    scores = [score_session(plan, log) for plan, log in zip(plans, logs, strict=True)]
    audio_s = n * load.seconds
    cpu_per_session_s = meter.cpu_s / audio_s
    return {
        "transport": transport,
        "sessions": n,
        "turns_sent": sum(s.expected for s in scores),
        "turns_completed": sum(s.matched for s in scores),
        "sessions_dropped": [log.dropped for log in logs if log.dropped],
        "ttfs_s": percentiles([v for s in scores for v in s.latencies_s]),
        "speech_end_to_stopped_s": percentiles([v for s in scores for v in s.vad_lag_s]),
        "stopped_to_completed_s": percentiles([v for s in scores for v in s.stop_to_done_s]),
        "max_send_lag_s": max(log.max_send_lag_s for log in logs),
        "edge_cpu_s": meter.cpu_s,
        "wall_s": meter.wall_s,
        "edge_cpu_ms_per_session_s": cpu_per_session_s * 1000,
        "sessions_per_core": 1 / cpu_per_session_s if cpu_per_session_s else None,
        "edge_rss_peak_mb": meter.rss_peak / 2**20,
        "client_cpu_cores": client.cpu_s / client.wall_s if client.wall_s else None,
    }


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "transport",
        "sessions",
        "turns completed / sent",
        "TTFS p50 / p95 ms",
        "speech end → stopped p50 ms",
        "stopped → completed p50 ms",
        "edge CPU ms per session-second",
        "sessions one core holds (edge)",
        "edge RSS peak MB",
        "client CPU (cores)",
        "client send lag max ms",
    ]
    body = [
        [
            r["transport"],
            r["sessions"],
            f"{r['turns_completed']} / {r['turns_sent']}",
            f"{results.ms(r['ttfs_s']['p50'])} / {results.ms(r['ttfs_s']['p95'])}",
            results.ms(r["speech_end_to_stopped_s"]["p50"]),
            results.ms(r["stopped_to_completed_s"]["p50"]),
            f"{r['edge_cpu_ms_per_session_s']:.1f}",
            f"{r['sessions_per_core']:.0f}" if r["sessions_per_core"] else "–",
            f"{r['edge_rss_peak_mb']:.0f}",
            f"{r['client_cpu_cores']:.2f}",
            results.ms(r["max_send_lag_s"]),
        ]
        for r in rows
    ]
    return results.markdown_table(header, body)


def plot(rows: list[dict[str, Any]]):
    figure, (ttfs_axis, cpu_axis) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['transport']}\n{r['sessions']} sessions" for r in rows]
    ttfs_axis.barh(labels, [(r["ttfs_s"]["p50"] or 0) * 1000 for r in rows])
    ttfs_axis.set_xlabel("TTFS p50, ms")
    cpu_axis.barh(labels, [r["edge_cpu_ms_per_session_s"] for r in rows], color="tab:orange")
    cpu_axis.set_xlabel("edge CPU ms per session-second")
    for axis in (ttfs_axis, cpu_axis):
        axis.tick_params(axis="y", labelsize=8)
    figure.suptitle("WebRTC calls against WebSocket sessions, same speech")
    figure.tight_layout()
    return figure


def wait_ready(edge_url: str, timeout_s: float = 300) -> None:
    """Until `/ready` (vLLM serves, the edge's warm-up is done)."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{edge_url}/ready", timeout=10).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the edge was not ready in {timeout_s:.0f} s")
        time.sleep(0.5)


def run(vllm_url: str, levels: list[int], load: Load, backend: str) -> None:
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # the client's side of loopback only
    ws_audio = SessionAudio(CHUNK_MS, append_message)
    pieces = [np.frombuffer(base64.b64decode(json.loads(m)["audio"]), "<i2") for m in ws_audio.messages]
    rows = []
    with processes.edge(vllm_url, webrtc_host_addresses="127.0.0.1") as edge:
        wait_ready(edge.url)
        for n in levels:
            for transport in ("websocket", "webrtc"):
                row = measure(transport, edge, n, ws_audio, pieces, load)
                rows.append(row)
                tqdm.write(
                    f"  {transport}, N={n}: TTFS p50 {results.ms(row['ttfs_s']['p50'])} ms, "
                    f"turns {row['turns_completed']}/{row['turns_sent']}, "
                    f"edge CPU {row['edge_cpu_ms_per_session_s']:.1f} ms/s, dropped {len(row['sessions_dropped'])}"
                )
    data = {"benchmark": "webrtc", "machine": results.machine(), "backend": backend, "load": asdict(load), "rows": rows}
    results.write("webrtc", data, table(rows), plot(rows))
    tqdm.write(table(rows))
