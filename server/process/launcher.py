"""Starts vLLM (unless `VLLM_URL` points at one) and then the edge, and stops both together.

`./serve.sh` runs `python -m server.process.launcher`; the RunPod worker uses `VLLMProcess` directly.
vLLM runs in its own virtual environment (`VLLM_PYTHON`) because it pins much of its world; the
edge only talks to it over HTTP. If vLLM dies, the launcher stops the edge and exits non-zero
with vLLM's last log lines.

With `WORKERS` > 1 the edge runs as that many processes on one port (uvicorn's supervisor, which
replaces a worker that dies). The launcher gives them a fresh shared directory
(`PROMETHEUS_MULTIPROC_DIR`: merged metrics and the realtime session count) and removes it at
the end; each worker gets SIGTERM if the launcher itself is killed.
"""

import asyncio
import collections
import ctypes
import functools
import json
import logging
import multiprocessing
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from server.api.app import create_app
from server.api.wire_limits import WebSocketProtocol, http_protocol
from server.core.settings import Settings, get_settings

log = logging.getLogger("launcher")

PR_SET_PDEATHSIG = 1
WORKER_PING_TIMEOUT_S = 30


class VLLMDied(RuntimeError):
    """vLLM exited; the message carries its last log lines."""


def served_model_name(settings: Settings) -> str:
    return settings.served_model_name or settings.voxtral_model


def vllm_command(settings: Settings) -> list[str]:
    """The command line that serves `VOXTRAL_MODEL` with Mistral's formats, plus `VLLM_ARGS`.

    vLLM schedules by priority (`--scheduling-policy priority`) so the edge's live requests go
    ahead of bulk work, and parses Voxtral's tool calls (`--enable-auto-tool-choice
    --tool-call-parser mistral`) for conversation sessions' function tools, and writes structured
    output (the edge's forced function calls) as compact JSON: without it a model may pad JSON with
    whitespace until its tokens run out. A `--scheduling-policy`, `--tool-call-parser` or
    `--structured-outputs-config` in `VLLM_ARGS` wins.
    """
    extra = shlex.split(settings.vllm_args)
    policy = [] if any(arg.startswith("--scheduling-policy") for arg in extra) else ["--scheduling-policy", "priority"]
    if not any(arg.startswith("--tool-call-parser") for arg in extra):
        policy += ["--enable-auto-tool-choice", "--tool-call-parser", "mistral"]
    if not any(arg.startswith("--structured-outputs-config") for arg in extra):
        policy += ["--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})]
    return [
        settings.vllm_python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        settings.voxtral_model,
        "--served-model-name",
        served_model_name(settings),
        "--tokenizer-mode",
        "mistral",
        "--config-format",
        "mistral",
        "--load-format",
        settings.vllm_load_format,
        "--host",
        settings.vllm_host,
        "--port",
        str(settings.vllm_port),
        *policy,
        *extra,
    ]


def has_nvidia_gpu() -> bool:
    return (
        shutil.which("nvidia-smi") is not None
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0
    )


def vllm_environment(settings: Settings) -> dict[str, str]:
    """vLLM's environment: its API key, and on a CPU a bounded KV cache instead of most of the memory.

    vLLM's CPU build otherwise reserves `--gpu-memory-utilization` (0.92) of all RAM and refuses
    to start when other processes use more than the rest.
    """
    env = dict(os.environ)
    env.pop("VLLM_API_KEY", None)
    if settings.vllm_api_key:  # vLLM's --api-key, passed in its environment so it shows in no command line
        env["VLLM_API_KEY"] = settings.vllm_api_key
    if not has_nvidia_gpu():
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.vllm_cpu_kvcache_gb))
    return env


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the launcher itself is killed, so vLLM is never orphaned."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class VLLMProcess:
    """A vLLM server child process whose output is echoed and whose last lines are kept."""

    def __init__(self, settings: Settings, *, keep_lines: int = 40, echo: bool = True) -> None:
        self.settings = settings
        self.echo = echo
        self.health_url = f"http://{settings.vllm_host}:{settings.vllm_port}/health"
        self._lines: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self._proc: subprocess.Popen[bytes] | None = None
        self._ipc_dir: str | None = None

    def start(self) -> None:
        """Start vLLM, with its ZMQ socket files in a directory of their own that `stop` removes:
        vLLM stopped by a signal leaves them behind in /tmp otherwise, one set per start."""
        cmd = vllm_command(self.settings)
        log.info("starting vLLM: %s", shlex.join(cmd))
        self._ipc_dir = tempfile.mkdtemp(prefix="vllm-ipc-", dir=os.environ.get("VLLM_RPC_BASE_PATH"))
        self._proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=vllm_environment(self.settings) | {"VLLM_RPC_BASE_PATH": self._ipc_dir},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self._proc and self._proc.stdout
        for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._lines.append(line)
            if self.echo:
                print(f"[vllm] {line}", file=sys.stderr, flush=True)

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def last_lines(self) -> str:
        return "\n".join(self._lines)

    def wait_healthy(self, timeout_s: float) -> None:
        """Block until `/health` answers 200; raise `VLLMDied` or `TimeoutError` otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise VLLMDied(f"vLLM exited with code {self.returncode}:\n{self.last_lines()}")
            try:
                if httpx.get(self.health_url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"vLLM did not become healthy in {timeout_s:.0f} s:\n{self.last_lines()}")

    def stop(self, timeout_s: float = 20) -> None:
        """Stop vLLM and every process it started (its process group), even when vLLM's main
        process is already gone: its EngineCore and workers outlive it otherwise."""
        if not self._proc:
            return
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5)):
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                break
            if self._group_gone(wait):
                break
        self._proc.poll()
        if self._ipc_dir:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)

    def _group_gone(self, timeout_s: float) -> bool:
        """Wait until no process of vLLM's group is left (reaping the main process, our child)."""
        assert self._proc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._proc.poll()
            if not _group_running(self._proc.pid):
                return True
            time.sleep(0.1)
        return False


def _group_running(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs. Exited ones not yet reaped do not count: the
    orphans among them are their new parent's to reap, which may be late or never."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue
        if state != "Z" and int(group) == pgid:
            return True
    return False


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """How uvicorn serves the edge: with its protocols bounded as `server.api.wire_limits` says.

    With `TLS_CERTFILE` and `TLS_KEYFILE` it serves https and wss itself. WebSocket messages may be a
    little larger than `REALTIME_MAX_MESSAGE_MB`, so the session itself refuses an oversized message
    with a clear `error` event before uvicorn would drop it.
    """
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=http_protocol(settings),
        ws=WebSocketProtocol,
        ws_max_size=int((settings.realtime_max_message_mb + 1) * 1_048_576),
        ws_ping_interval=settings.realtime_ping_interval_s,
        ws_ping_timeout=settings.realtime_ping_timeout_s,
    )
    if settings.tls:
        options.update(ssl_certfile=settings.tls_certfile, ssl_keyfile=settings.tls_keyfile)
    options.update(overrides)
    return uvicorn.Config(app, **options)


async def _serve_edge(settings: Settings, vllm: VLLMProcess | None) -> int:
    """Run the edge until it is told to stop; stop it early (exit 1) if vLLM dies."""
    server = uvicorn.Server(uvicorn_config(functools.partial(create_app, settings), settings, factory=True))
    exit_code = 0

    async def watch_vllm() -> None:
        nonlocal exit_code
        while vllm is not None and vllm.returncode is None:
            await asyncio.sleep(1)
        if vllm is not None:
            log.error("vLLM exited with code %s; stopping the edge.\n%s", vllm.returncode, vllm.last_lines())
            exit_code = 1
            server.should_exit = True

    watcher = asyncio.create_task(watch_vllm())
    try:
        await server.serve()
    finally:
        watcher.cancel()
    return exit_code


def worker_app() -> FastAPI:
    """The app of one of several edge workers (uvicorn's factory, run in the worker process)."""
    from server.api.app import create_app

    _die_with_parent()
    launcher = multiprocessing.parent_process()
    if launcher is None or os.getppid() != launcher.pid:
        sys.exit("the launcher exited while this worker started")  # before the death signal was set
    return create_app()


def _serve_workers(settings: Settings, vllm: VLLMProcess | None) -> int:
    """Run `WORKERS` edge processes on one port until told to stop, or (exit 1) until vLLM dies.

    uvicorn's supervisor handles SIGINT/SIGTERM here: it stops the workers and returns.
    """
    shared = tempfile.mkdtemp(prefix="voxtral-edge-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
    # The workers read their settings from the environment: they need the key of the vLLM started
    # here, and one signing key between them, or a secret minted by one would fail on another.
    if settings.vllm_api_key:
        os.environ["VLLM_API_KEY"] = settings.vllm_api_key
    os.environ.setdefault("EPHEMERAL_SECRET_KEY", settings.ephemeral_secret_key or secrets.token_urlsafe(32))
    # A worker whose event loop is busy may answer the supervisor's ping late; a short limit would
    # have it killed (with all its sessions) for being slow rather than hung.
    config = uvicorn_config(
        "server.process.launcher:worker_app",
        settings,
        factory=True,
        workers=settings.workers,
        timeout_worker_healthcheck=WORKER_PING_TIMEOUT_S,
    )
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    exit_code = 0

    def watch_vllm() -> None:
        nonlocal exit_code
        while vllm is not None and vllm.returncode is None and not supervisor.should_exit.wait(1):
            pass
        if vllm is not None and vllm.returncode is not None:
            log.error("vLLM exited with code %s; stopping the edge.\n%s", vllm.returncode, vllm.last_lines())
            exit_code = 1
            supervisor.should_exit.set()

    threading.Thread(target=watch_vllm, daemon=True).start()
    try:
        supervisor.run()
    finally:
        supervisor.should_exit.set()
        shutil.rmtree(shared, ignore_errors=True)
    return exit_code


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    vllm: VLLMProcess | None = None
    if settings.vllm_url:
        log.info("using the vLLM at %s", settings.backend_url)
    else:
        # A key per start that only the edge knows, so nothing else can use vLLM where its port is reachable.
        settings = settings.model_copy(update={"vllm_api_key": settings.vllm_api_key or secrets.token_urlsafe(32)})
        vllm = VLLMProcess(settings)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        vllm.start()
    try:
        if vllm:
            vllm.wait_healthy(settings.vllm_startup_timeout_s)
        shown = "localhost" if settings.host in ("0.0.0.0", "::") else settings.host
        base = f"{'https' if settings.tls else 'http'}://{shown}:{settings.port}"
        print(f"\n  API   {base}/v1\n  UI    {base}/\n  Docs  {base}/docs\n", file=sys.stderr, flush=True)
        if settings.workers > 1:
            code = _serve_workers(settings, vllm)
        else:
            code = asyncio.run(_serve_edge(settings, vllm))
    except (VLLMDied, TimeoutError) as exc:
        log.error("%s", exc)
        code = 1
    except KeyboardInterrupt:
        code = 0
    finally:
        if vllm:
            vllm.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
