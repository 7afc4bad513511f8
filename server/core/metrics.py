"""Prometheus metrics of the edge, served at `/metrics` (names start with `edge_`).

Usage is also counted per API key *name* (never the key): the name of the caller's key is in
`usage_key` for the request or realtime session being served (set by `server.api.access`).

With several workers (`WORKERS` > 1) the launcher sets `PROMETHEUS_MULTIPROC_DIR` before they
start, prometheus-client then keeps every worker's values in files there, and `/metrics` merges
them into one exposition: counters and histograms summed, gauges by their `multiprocess_mode`.
"""

import contextvars
import re
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from server.core.shared_count import pid_running

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

usage_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("usage_key", default=None)

KEY_REQUESTS = Counter("edge_key_requests_total", "Authenticated /v1 HTTP requests by API key name", ["key"])
KEY_AUDIO_SECONDS = Counter(
    "edge_key_audio_seconds_total", "Seconds of audio processed (files) or received (realtime) by API key name", ["key"]
)
KEY_REALTIME_SESSIONS = Counter("edge_key_realtime_sessions_total", "Realtime sessions opened by API key name", ["key"])


def count_key_audio(seconds: float) -> None:
    """Seconds of audio received for the caller's key (realtime input; files count through `AUDIO_SECONDS`)."""
    if (name := usage_key.get()) is not None:
        KEY_AUDIO_SECONDS.labels(name).inc(seconds)


class AudioSecondsCounter(Counter):
    """`edge_audio_seconds_total`, which also counts the seconds for the caller's key name."""

    def inc(self, amount: float = 1, exemplar: dict[str, str] | None = None) -> None:
        super().inc(amount, exemplar)
        count_key_audio(amount)


REQUESTS = Counter("edge_requests_total", "HTTP requests by route and status", ["route", "status"])
AUDIO_SECONDS = AudioSecondsCounter("edge_audio_seconds_total", "Seconds of audio processed", ["route"])
STAGE_SECONDS = Histogram(
    "edge_stage_seconds",
    "Time spent per request stage: decode, vad, backend, total",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
REQUEST_SECONDS = Histogram(
    "edge_request_seconds", "Total request latency by route", ["route"], buckets=LATENCY_BUCKETS
)
WIRE_TIMEOUTS = Counter(
    "edge_wire_timeouts_total",
    "HTTP connections closed for a client too slow: idle (no request), head (line and headers), body",
    ["what"],
)
CONNECTIONS_OPEN = Gauge(
    "edge_connections_open",
    "Connections open now (HTTP, WebSocket and raw TCP; at most MAX_CONNECTIONS per process)",
    multiprocess_mode="livesum",
)
CONNECTIONS_REFUSED = Counter(
    "edge_connections_refused_total",
    "New connections turned away at a cap: process (MAX_CONNECTIONS) or client (MAX_CONNECTIONS_PER_CLIENT)",
    ["cap"],
)
IDLE_CONNECTIONS_CLOSED = Counter(
    "edge_idle_connections_closed_total", "Idle connections closed at a connection cap to make room for a new one"
)
BACKEND_CHUNKS = Counter("edge_backend_chunks_total", "Audio chunks sent to vLLM", ["task"])

REALTIME_SESSIONS = Gauge("edge_realtime_sessions", "Realtime sessions open now", multiprocess_mode="livesum")
REALTIME_SHED = Counter(
    "edge_realtime_sessions_shed_total",
    "Realtime sessions the edge closed to protect itself: lagging (processing behind) or slow_client (not reading)",
    ["reason"],
)
WEBRTC_CALLS = Counter("edge_webrtc_calls_total", "WebRTC calls ended, by how they ended", ["end"])
REALTIME_TURNS = Counter("edge_realtime_turns_total", "Realtime turns by outcome", ["outcome"])
TURN_CHECKS = Counter(
    "edge_realtime_turn_checks_total",
    "semantic_vad's turn-completion checks at a pause: complete (the turn ended), incomplete, failed",
    ["outcome"],
)
WARMUP_REQUEST_SECONDS = Histogram(
    "edge_warmup_request_seconds",
    "One warm-up request to vLLM before /ready, by kind (transcription, transcription stream, chat, realtime)",
    ["kind", "outcome"],
    buckets=LATENCY_BUCKETS,
)
TURN_CHECK_SECONDS = Histogram(
    "edge_realtime_turn_check_seconds", "One turn-completion check, asked → answered", buckets=LATENCY_BUCKETS
)
EAGER_TRANSCRIPTIONS = Counter(
    "edge_realtime_eager_transcriptions_total",
    "Turns transcribed at a pause before their end was confirmed: used (the turn ended there) or discarded "
    "(speech went on, or the turn ended elsewhere; its vLLM request aborted)",
    ["outcome"],
)
REALTIME_STREAM_LATE_TEXT = Counter(
    "edge_realtime_stream_late_text_total",
    "Streamed items (Voxtral Realtime) for which vLLM wrote text after the item's final went out; that text "
    "was dropped (REALTIME_STREAM_MARGIN_MS is too small for the model)",
)
REALTIME_RESPONSES = Counter(
    "edge_realtime_responses_total",
    "Conversation-session responses by status: completed, incomplete (max_output_tokens), cancelled, failed",
    ["status"],
)
RESPONSE_FIRST_DELTA_SECONDS = Histogram(
    "edge_realtime_response_first_delta_seconds",
    "Latency from a response's start to its first text or function-call delta: total, and its backend part "
    "(the chat request sent → its first delta read) and edge part (the rest)",
    ["part"],
    buckets=LATENCY_BUCKETS,
)
TURN_SECONDS = Histogram(
    "edge_realtime_turn_seconds",
    "Latency from speech_stopped to the completed transcript: total, edge and backend parts",
    ["part"],
    buckets=LATENCY_BUCKETS,
)

FILE_BACKEND_IN_FLIGHT = Gauge(
    "edge_file_backend_requests_in_flight",
    "File-transcription requests at vLLM now (at most MAX_FILE_BACKEND_REQUESTS)",
    multiprocess_mode="livesum",
)
FILE_BACKEND_WAITING = Gauge(
    "edge_file_backend_requests_waiting",
    "File-transcription chunks waiting for a place in the file budget",
    multiprocess_mode="livesum",
)

LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


def exposition(multiproc_dir: str | None) -> bytes:
    """This process's metrics, or with `multiproc_dir` all workers' metrics merged.

    Live gauges of workers that died (and were replaced) are dropped first, so their open
    sessions do not count forever.
    """
    if multiproc_dir is None:
        return generate_latest()
    for file in Path(multiproc_dir).glob("gauge_live*.db"):
        found = LIVE_GAUGE_FILE.fullmatch(file.name)
        if found and not pid_running(int(found[1])):
            multiprocess.mark_process_dead(int(found[1]), multiproc_dir)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiproc_dir)
    return generate_latest(registry)
