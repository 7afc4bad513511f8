"""Run the benchmarks: `python -m benchmarks [COMMAND] [options]` (one of `COMMANDS`; default all).

Without `--edge-url`/`--vllm-url` a fresh stack is started: the tiny vLLM (VLLMProcess) and the
edge as a uvicorn subprocess. `capacity` always runs its own edge in front of the zero-cost
stand-in backend (`benchmarks.standin`), since it measures the edge alone. `mixed` and
`fairness` start their own edges (their settings are what they compare); `mixed` also starts a
tiny vLLM per scheduling policy unless `--vllm-url` is given.
"""

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks import (
    cold_bench,
    conversation_bench,
    fairness_bench,
    files_bench,
    mixed_bench,
    overhead_bench,
    processes,
    realtime_bench,
    results,
    ttfs_bench,
    webrtc_bench,
)

COMMANDS = (
    "all", "capacity", "realtime", "conversation", "ttfs", "webrtc", "cold",
    "files", "overhead", "mixed", "fairness", "vad",
)  # fmt: skip


@dataclass(frozen=True)
class Stack:
    """Where to send requests, and which local pids to meter (none for a stack we did not start)."""

    edge_url: str
    vllm_url: str
    pids: dict[str, int]


def _levels(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _seconds(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="all", choices=COMMANDS)
    parser.add_argument("--edge-url", help="an edge already running (with --vllm-url: its vLLM)")
    parser.add_argument("--vllm-url", help="a vLLM already running; without --edge-url an edge is started for it")
    parser.add_argument("--edge-pid", type=int, help="pid of the --edge-url edge, to meter its CPU and memory")
    parser.add_argument("--capacity-sessions", type=_levels, default=[50, 100, 200, 250, 300, 400])
    parser.add_argument("--realtime-sessions", type=_levels, default=[1, 2, 4, 8, 16, 32, 48, 64])
    parser.add_argument("--workers", type=int, default=1, help="capacity: edge processes (WORKERS, via the launcher)")
    parser.add_argument(
        "--load-processes", type=int, default=1, help="capacity: client processes of the load generator"
    )
    parser.add_argument(
        "--realtime-vllm-url", help="ttfs: a vLLM serving Voxtral Realtime: measure the streaming engine instead"
    )
    parser.add_argument("--ttfs-sessions", type=_levels, default=[1, 8], help="ttfs: sessions per mode")
    parser.add_argument("--webrtc-sessions", type=_levels, default=[1, 8, 16], help="webrtc: sessions per transport")
    parser.add_argument("--conversation-sessions", type=_levels, default=[1, 4, 8, 16, 24, 32, 48])
    parser.add_argument("--conversation-alone-sessions", type=_levels, default=[16, 64, 128, 256])
    parser.add_argument("--reply-tokens", type=int, default=32, help="conversation: max_output_tokens per reply")
    parser.add_argument("--long-sessions", type=int, default=16, help="conversation: sessions of the long conversation")
    parser.add_argument("--long-minutes", type=float, default=30.0, help="conversation: audio per long conversation")
    parser.add_argument(
        "--long-speed", type=float, default=10.0, help="conversation: the long one's pace (x real time)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per realtime session")
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per append message (20–100)")
    parser.add_argument("--long-seconds", type=_seconds, default=[600.0, 3600.0], help="lengths of the long files")
    parser.add_argument("--repeats", type=int, default=3, help="runs per file in the file benchmark")
    parser.add_argument("--overhead-requests", type=int, default=300, help="requests per path and concurrency")
    parser.add_argument("--mixed-sessions", type=int, default=16, help="live sessions in the mixed benchmark")
    parser.add_argument("--mixed-seconds", type=float, default=60.0, help="audio per live session (mixed)")
    parser.add_argument("--file-seconds", type=float, default=3600.0, help="the long file (mixed, fairness)")
    parser.add_argument("--mixed-files", type=int, default=1, help="long files back to back (mixed)")
    parser.add_argument("--file-budget", type=int, default=4, help="MAX_FILE_BACKEND_REQUESTS (fairness)")
    parser.add_argument("--results-dir", type=Path, default=results.RESULTS)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (unless given), to check that everything runs")
    if parser.parse_args(argv).quick:
        parser.set_defaults(
            capacity_sessions=[4],
            realtime_sessions=[2],
            conversation_sessions=[2],
            ttfs_sessions=[1],
            webrtc_sessions=[1],
            conversation_alone_sessions=[2],
            long_sessions=1,
            long_minutes=1.0,
            seconds=8.0,
            long_seconds=[120.0],
            repeats=1,
            overhead_requests=20,
            mixed_sessions=2,
            mixed_seconds=8.0,
            file_seconds=120.0,
        )
    return parser.parse_args(argv)


@contextmanager
def vllm_stack(args: argparse.Namespace, **edge_settings: object) -> Iterator[Stack]:
    """The stack under test: given URLs, or a tiny vLLM and an edge started here."""
    with ExitStack() as stack:
        pids: dict[str, int] = {}
        vllm_url = args.vllm_url
        if vllm_url is None and args.edge_url is None:
            vllm_url = stack.enter_context(processes.tiny_vllm())
            port = int(vllm_url.rsplit(":", 1)[1])
            if (pid := processes.child_listening_on(port)) is not None:
                pids["vllm"] = pid
        if args.edge_url:
            if args.edge_pid:
                pids["edge"] = args.edge_pid
            yield Stack(args.edge_url, vllm_url or "", pids)
            return
        edge = stack.enter_context(processes.edge(vllm_url, **edge_settings))
        pids["edge"] = edge.pid
        yield Stack(edge.url, vllm_url, pids)


def run_capacity(args: argparse.Namespace) -> None:
    config = realtime_bench.LoadConfig(args.seconds, args.chunk_ms, drain_s=10.0, load_processes=args.load_processes)
    # The edge share alone can stay small while audio queues up in front of the VAD: the turn
    # latency bound makes "holds" mean that the edge keeps up with real time.
    budget = realtime_bench.Budget(edge_p99_s=0.050, turn_p99_s=1.5)
    with processes.standin() as backend, processes.edge(backend.url, workers=args.workers) as edge:
        pids = {"edge": edge.pid, "standin": backend.pid, "load_generator": os.getpid()}
        points, best = realtime_bench.sweep(edge.url, args.capacity_sessions, budget, config, pids)
    realtime_bench.report(
        "realtime_capacity",
        "Edge capacity, zero-cost stand-in backend",
        points,
        best,
        budget,
        config,
        {
            "backend": "zero-cost stand-in (benchmarks/standin.py), own process, same 2 cores",
            "edge": "python -m uvicorn server.api.app:create_app --factory (1 process)"
            if args.workers == 1
            else f"python -m server.process.launcher, WORKERS={args.workers}",
        },
    )


def run_realtime(args: argparse.Namespace, stack: Stack) -> None:
    config = realtime_bench.LoadConfig(args.seconds, args.chunk_ms, drain_s=20.0)
    budget = realtime_bench.Budget(turn_p99_s=1.5)
    pids = {**stack.pids, "load_generator": os.getpid()}
    points, best = realtime_bench.sweep(stack.edge_url, args.realtime_sessions, budget, config, pids)
    realtime_bench.report(
        "realtime_vllm",
        "End to end, real vLLM",
        points,
        best,
        budget,
        config,
        {"backend": _backend_name(args, stack), "max_output_tokens": processes.MAX_OUTPUT_TOKENS},
    )


def run_conversation(args: argparse.Namespace, stack: Stack) -> None:
    load = conversation_bench.Load(args.seconds, args.chunk_ms, args.reply_tokens)
    budget = conversation_bench.Budget()
    with (
        processes.standin() as backend,
        processes.edge(backend.url) as edge,
        processes.edge(backend.url) as fresh,
    ):
        long_talk = conversation_bench.LongTalk(
            fresh.url, fresh.pid, args.long_sessions, args.long_minutes, args.long_speed
        )
        alone = conversation_bench.Sweep(
            "Edge alone, zero-cost stand-in backend (benchmarks/standin.py)",
            edge.url,
            {"edge": edge.pid},
            args.conversation_alone_sessions,
            conversation_bench.Budget(edge_p99_s=0.010),
        )
        real = conversation_bench.Sweep(
            f"End to end, {_backend_name(args, stack)}", stack.edge_url, stack.pids, args.conversation_sessions, budget
        )
        conversation_bench.run(long_talk, alone, real, load)


def run_ttfs(args: argparse.Namespace, stack: Stack) -> None:
    if not stack.vllm_url:
        raise SystemExit("the TTFS benchmark starts its own edges: give --vllm-url")
    load = ttfs_bench.Load(args.seconds)
    ttfs_bench.run(stack.vllm_url, args.ttfs_sessions, load, _backend_name(args, stack), args.realtime_vllm_url)


def run_webrtc(args: argparse.Namespace, stack: Stack) -> None:
    if not stack.vllm_url:
        raise SystemExit("the WebRTC benchmark starts its own edge: give --vllm-url")
    webrtc_bench.run(stack.vllm_url, args.webrtc_sessions, webrtc_bench.Load(args.seconds), _backend_name(args, stack))


def _backend_name(args: argparse.Namespace, stack: Stack) -> str:
    if args.vllm_url or args.edge_url:
        if not stack.vllm_url:
            return "vLLM behind the --edge-url edge"
        return f"{results.vllm_build(stack.vllm_url)} at {stack.vllm_url}"
    return f"{results.vllm_build(stack.vllm_url)}, {results.TINY_MODEL}, {processes.TINY_VLLM_ARGS}"


def run_files(args: argparse.Namespace, stack: Stack) -> None:
    if not stack.vllm_url:
        raise SystemExit("the file benchmark compares with vLLM directly: give --vllm-url with --edge-url")
    files_bench.run(stack.edge_url, stack.vllm_url, args.long_seconds, args.repeats, _backend_name(args, stack))


def run_overhead(args: argparse.Namespace, stack: Stack) -> None:
    if not stack.vllm_url:
        raise SystemExit("the overhead benchmark compares with vLLM directly: give --vllm-url with --edge-url")
    overhead_bench.run(stack.edge_url, stack.vllm_url, args.overhead_requests, _backend_name(args, stack))
    with processes.standin() as backend, processes.edge(backend.url, workers=args.workers) as edge:
        overhead_bench.run(
            edge.url,
            backend.url,
            args.overhead_requests,
            "zero-cost stand-in (benchmarks/standin.py)",
            name="overhead_standin",
        )


def run_mixed(args: argparse.Namespace) -> None:
    config = realtime_bench.LoadConfig(args.mixed_seconds, args.chunk_ms, drain_s=20.0)
    mixed_bench.run(
        args.vllm_url, args.mixed_sessions, config, args.file_seconds, args.mixed_files, _mixed_backend_name(args)
    )


def _mixed_backend_name(args: argparse.Namespace) -> str:
    if args.vllm_url:
        return f"{results.vllm_build(args.vllm_url)} at {args.vllm_url}"
    return f"the tiny vLLM the benchmark starts, {results.TINY_MODEL}, {processes.TINY_VLLM_ARGS}"


def run_fairness(args: argparse.Namespace, stack: Stack) -> None:
    if not stack.vllm_url:
        raise SystemExit("the fairness benchmark starts its own edges: give --vllm-url")
    repeats = max(args.repeats, 1)
    fairness_bench.run(stack.vllm_url, args.file_seconds, repeats, args.file_budget, _backend_name(args, stack))


VLLM_RUNNERS = {
    "realtime": run_realtime,
    "conversation": run_conversation,
    "ttfs": run_ttfs,
    "webrtc": run_webrtc,
    "files": run_files,
    "overhead": run_overhead,
    "fairness": run_fairness,
}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results.directory = args.results_dir
    if args.command == "vad":
        from benchmarks import vad_bench

        vad_bench.main()
        return
    commands = ["capacity", "cold", "mixed", *VLLM_RUNNERS] if args.command == "all" else [args.command]
    if "capacity" in commands:
        print("== capacity (edge alone, stand-in backend)", file=sys.stderr, flush=True)
        run_capacity(args)
    if "cold" in commands:
        print("== cold (a fresh vLLM's first requests, with and without the warm-up)", file=sys.stderr, flush=True)
        cold_bench.run(_mixed_backend_name(args), args.vllm_url)
    if "mixed" in commands:
        print("== mixed (live sessions with a long file)", file=sys.stderr, flush=True)
        run_mixed(args)
    wanted = [command for command in commands if command in VLLM_RUNNERS]
    if wanted:
        with vllm_stack(args) as stack:
            for command in wanted:
                print(f"== {command}", file=sys.stderr, flush=True)
                VLLM_RUNNERS[command](args, stack)


if __name__ == "__main__":
    main()
