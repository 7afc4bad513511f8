"""Overload: connection floods against one edge process, and shedding lagging realtime sessions.

`python -m benchmarks.overload_bench flood`: the floods of issue 25 (a client opening thousands of
connections, each with a complete head and a body that never comes; many connections that send
nothing; a body that trickles) against an edge process (`python -m server.process.launcher`, its
vLLM unreachable, as in the issue) with its default caps, and with the caps lifted for comparison.
Hostile connections come from other loopback addresses (127.0.x.y) than the probe's. Measured:
`/health` latency on a new connection every 100 ms during the flood (the main port; and the health
port, which is not capped), how the hostile connections ended (503 at once, 408 at their body
deadline, closed idle) and when, the edge's memory and file descriptors.

`python -m benchmarks.overload_bench shed --vllm-url URL`: realtime sessions at 1x (the OpenAI
Realtime client of `realtime_client`) against one edge process in front of the tiny vLLM, started
two ways in the same run: a slow ramp (one session every `--ramp-every` s) and a sudden load (all
at once); how many each ends with (not shed, `session_lagging`), with the sessions shed one at a
time (`server.realtime.shedding`).
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks import results
from benchmarks.processes import ROOT, SERVED_MODEL, free_port, wait_healthy
from benchmarks.realtime_client import append_message, run_session
from benchmarks.speech import SessionAudio
from benchmarks.stats import percentiles

HOSTILE_HEAD = (
    b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000000\r\n\r\n{"
)
WAIT_CLOSE_S = 150.0  # a hostile connection the edge has not closed by then counts as never closed
PROBE_EVERY_S = 0.1


@dataclass
class Edge:
    process: subprocess.Popen[bytes]
    port: int
    health_port: int


@contextmanager
def edge_process(log: Path, **settings: object) -> Iterator[Edge]:
    port, health_port = free_port(), free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "HEALTH_PORT": str(health_port),
        "VLLM_URL": f"http://127.0.0.1:{free_port()}",
        "SERVED_MODEL_NAME": SERVED_MODEL,
        "LOG_LEVEL": "warning",
    }
    env.update({key.upper(): str(value) for key, value in settings.items()})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.process.launcher"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, 60)
        yield Edge(process, port, health_port)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class Hostile:
    """How one hostile connection ended: the status it got (0: closed with no answer), and when."""

    status: int = -1  # -1: could not connect
    opened_s: float = 0.0
    closed_s: float | None = None


async def _hostile(port: int, source: str, send: bytes, t0: float, out: Hostile) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except OSError:
        return
    out.opened_s = time.perf_counter() - t0
    out.status = 0
    try:
        if send:
            writer.write(send)
        async with asyncio.timeout(WAIT_CLOSE_S):
            data = await reader.read(65536)
            if data.startswith(b"HTTP/1.1 "):
                out.status = int(data[9:12])
            while await reader.read(65536):
                pass
        out.closed_s = time.perf_counter() - t0
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()


async def _trickle(port: int, source: str, t0: float, out: Hostile) -> None:
    """A body of a promised 10 MB, a byte every 5 s (the issue's)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    out.opened_s, out.status = time.perf_counter() - t0, 0
    writer.write(HOSTILE_HEAD.replace(b"1000000", b"10000000"))
    try:
        async with asyncio.timeout(WAIT_CLOSE_S):
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), 5)
                except TimeoutError:
                    writer.write(b" ")
                    continue
                if data.startswith(b"HTTP/1.1 "):
                    out.status = int(data[9:12])
                if not data:
                    break
        out.closed_s = time.perf_counter() - t0
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()


class Probe(threading.Thread):
    """`GET /health` on a new connection every `PROBE_EVERY_S`: its latency and status (0: failed)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(PROBE_EVERY_S):
            started = time.perf_counter()
            try:
                status = httpx.get(self.url, timeout=10).status_code
            except httpx.HTTPError:
                status = 0
            self.samples.append((time.perf_counter() - started, status))

    def summary(self) -> dict[str, Any]:
        ok = [latency for latency, status in self.samples if status == 200]
        quantiles = percentiles(ok)
        return {
            "probes": len(self.samples),
            "statuses": dict(Counter(str(status) for _, status in self.samples)),
            "ok_p50_ms": round((quantiles["p50"] or 0) * 1000, 1),
            "ok_p99_ms": round((quantiles["p99"] or 0) * 1000, 1),
            "all_p99_ms": round((percentiles([latency for latency, _ in self.samples])["p99"] or 0) * 1000, 1),
        }


class Meter(threading.Thread):
    """The edge process's memory and open file descriptors, every 0.25 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.rss: list[int] = []
        self.fds: list[int] = []
        self.stop = threading.Event()

    def sample(self) -> tuple[int, int]:
        return self.process.memory_info().rss, self.process.num_fds()

    def run(self) -> None:
        while not self.stop.wait(0.25):
            rss, fds = self.sample()
            self.rss.append(rss)
            self.fds.append(fds)


@dataclass(frozen=True)
class Flood:
    name: str
    connections: int
    sources: int
    send: bytes
    settings: dict[str, object] = field(default_factory=dict)
    trickle: bool = False


FLOODS = [
    Flood("bodies, 1 address", 4000, 1, HOSTILE_HEAD, trickle=True),
    Flood(
        "bodies, 1 address, no caps",
        4000,
        1,
        HOSTILE_HEAD,
        {"max_connections": 10**6, "max_connections_per_client": 10**6},
    ),
    Flood("bodies, 20 addresses", 5000, 20, HOSTILE_HEAD),
    Flood("idle, 30 addresses", 6000, 30, b""),
]


def source(i: int, sources: int) -> str:
    n = i % sources
    return f"127.0.{1 + n // 250}.{2 + n % 250}"


async def _flood(port: int, flood: Flood, t0: float) -> tuple[list[Hostile], Hostile | None]:
    ends = [Hostile() for _ in range(flood.connections)]
    trickle = Hostile() if flood.trickle else None
    tasks = [
        asyncio.create_task(_hostile(port, source(i, flood.sources), flood.send, t0, end)) for i, end in enumerate(ends)
    ]
    if trickle is not None:
        tasks.append(asyncio.create_task(_trickle(port, "127.0.9.9", t0, trickle)))
    await asyncio.gather(*tasks)
    return ends, trickle


def run_flood(flood: Flood, work: Path) -> dict[str, Any]:
    with edge_process(work / f"edge-{flood.name.replace(' ', '_').replace(',', '')}.log", **flood.settings) as edge:
        time.sleep(2)
        meter = Meter(edge.process.pid)
        rss0, fds0 = meter.sample()
        probes = [Probe(f"http://127.0.0.1:{edge.port}/health"), Probe(f"http://127.0.0.1:{edge.health_port}/health")]
        meter.start()
        for probe in probes:
            probe.start()
        t0 = time.perf_counter()
        ends, trickle = asyncio.run(_flood(edge.port, flood, t0))
        threads: list[Probe | Meter] = [*probes, meter]
        for thread in threads:
            thread.stop.set()
        for thread in threads:
            thread.join()
        time.sleep(2)
        rss1, fds1 = meter.sample()
    opened = [end for end in ends if end.status >= 0]
    closed = [end for end in opened if end.closed_s is not None]
    lasted = {id(end): (end.closed_s or 0.0) - end.opened_s for end in closed}
    by_status = Counter(str(end.status) for end in opened)
    held = [end for end in closed if end.status != 503]
    row: dict[str, Any] = {
        "flood": flood.name,
        "connections": flood.connections,
        "connected": len(opened),
        "ended_with": dict(by_status),
        "never_closed": len(opened) - len(closed),
        "turned_away_closed_max_s": round(max((lasted[id(e)] for e in closed if e.status == 503), default=0.0), 2),
        "held_closed_max_s": round(max((lasted[id(e)] for e in held), default=0.0), 1),
        "last_closed_s": round(max((e.closed_s or 0.0 for e in closed), default=0.0), 1),
        "health_main": probes[0].summary(),
        "health_port": probes[1].summary(),
        "rss_mb": [round(rss0 / 2**20, 1), round(max(meter.rss, default=rss0) / 2**20, 1), round(rss1 / 2**20, 1)],
        "fds": [fds0, max(meter.fds, default=fds0), fds1],
    }
    if trickle is not None:
        row["trickle"] = {
            "status": trickle.status,
            "closed_after_s": trickle.closed_s and round(trickle.closed_s - trickle.opened_s, 1),
        }
    return row


def flood_table(rows: list[dict[str, Any]]) -> str:
    header = [
        "flood",
        "connections",
        "ended with",
        "never closed",
        "503s closed within (s)",
        "held closed within (s)",
        "/health p50 / p99 (ms)",
        "/health statuses",
        "health port p99 (ms)",
        "RSS before / peak / after (MB)",
        "fds before / peak / after",
    ]
    body = [
        [
            row["flood"],
            row["connections"],
            ", ".join(f"{count}× {status}" for status, count in sorted(row["ended_with"].items())),
            row["never_closed"],
            row["turned_away_closed_max_s"],
            row["held_closed_max_s"],
            f"{row['health_main']['ok_p50_ms']} / {row['health_main']['ok_p99_ms']}",
            ", ".join(f"{count}× {status}" for status, count in sorted(row["health_main"]["statuses"].items())),
            row["health_port"]["ok_p99_ms"],
            " / ".join(str(v) for v in row["rss_mb"]),
            " / ".join(str(v) for v in row["fds"]),
        ]
        for row in rows
    ]
    return results.markdown_table(header, body)


# --- shedding ---------------------------------------------------------------------------------


@contextmanager
def realtime_edge(vllm_url: str, log: Path, **settings: object) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "VLLM_URL": vllm_url,
        "SERVED_MODEL_NAME": SERVED_MODEL,
        "MAX_OUTPUT_TOKENS": "8",
        "REALTIME_MAX_SESSIONS": "5000",
        "LOG_LEVEL": "warning",
    }
    env.update({key.upper(): str(value) for key, value in settings.items()})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.process.launcher"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", process, 60)
        yield f"ws://127.0.0.1:{port}/v1/realtime"
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def _sessions(url: str, n: int, starts: list[float], end_s: float, chunk_ms: int) -> list[dict[str, Any]]:
    """Session i starts at `starts[i]` and streams until `end_s` (both from now)."""
    audio = SessionAudio(chunk_ms, append_message)
    t0 = time.perf_counter()

    async def one(i: int) -> dict[str, Any]:
        plan = audio.plan(end_s - starts[i], seed=i)
        await asyncio.sleep(max(0.0, t0 + starts[i] - time.perf_counter()))
        log = await run_session(url, plan, audio.messages, chunk_ms / 1000, drain_s=10)
        shed = "session_lagging" in log.errors
        return {"start_s": starts[i], "shed": shed, "dropped": log.dropped if not shed else None}

    return await asyncio.gather(*(one(i) for i in range(n)))


def run_shed(vllm_url: str, n: int, ramp_every_s: float, hold_s: float, work: Path, chunk_ms: int) -> list[dict]:
    rows = []
    ramp = [i * ramp_every_s for i in range(n)]
    sudden = [i * 0.02 for i in range(n)]
    # The last mode sheds with no pause between sessions: about what shedding was before the
    # shared shedder (each session shed itself as it passed the bound).
    modes: list[tuple[str, list[float], float, dict[str, object]]] = [
        ("slow ramp", ramp, ramp[-1] + hold_s, {}),
        ("sudden", sudden, hold_s, {}),
        ("sudden, no pause between sheds", sudden, hold_s, {"realtime_shed_interval_s": 0.001}),
    ]
    for mode, starts, end_s, settings in modes:
        log = work / f"edge-shed-{mode.replace(' ', '_').replace(',', '')}.log"
        with realtime_edge(vllm_url, log, **settings) as url:
            sessions = asyncio.run(_sessions(url, n, starts, end_s, chunk_ms))
        shed = [s for s in sessions if s["shed"]]
        dropped = [s for s in sessions if s["dropped"]]
        rows.append(
            {
                "mode": mode,
                "sessions": n,
                "seconds": round(end_s, 1),
                "shed": len(shed),
                "other_drops": len(dropped),
                "kept": n - len(shed) - len(dropped),
                "first_shed_start_s": min((s["start_s"] for s in shed), default=None),
                "drop_reasons": sorted({s["dropped"] for s in dropped})[:3],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload_bench", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("flood", "shed"))
    parser.add_argument("--vllm-url", help="shed: the tiny vLLM to stream to")
    parser.add_argument("--sessions", type=int, default=60, help="shed: live sessions")
    parser.add_argument("--ramp-every", type=float, default=1.0, help="shed: seconds between ramp starts")
    parser.add_argument("--hold", type=float, default=60.0, help="shed: seconds the sessions stream at full load")
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--floods", help="flood: comma-separated indices of FLOODS to run (default all)")
    args = parser.parse_args()
    work = Path(__file__).resolve().parent / ".work" / "overload"
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"machine": results.machine()}
    if args.command == "flood":
        chosen = [FLOODS[int(i)] for i in args.floods.split(",")] if args.floods else FLOODS
        rows = []
        for flood in chosen:
            rows.append(run_flood(flood, work))
            print(json.dumps(rows[-1]), flush=True)
        out["floods"] = rows
        print(flood_table(rows))
    else:
        if not args.vllm_url:
            parser.error("shed needs --vllm-url")
        out["shed"] = run_shed(args.vllm_url, args.sessions, args.ramp_every, args.hold, work, args.chunk_ms)
    path = results.RESULTS / f"overload_{args.command}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written {path}; mean load {statistics.mean(os.getloadavg()):.2f}")


if __name__ == "__main__":
    main()
