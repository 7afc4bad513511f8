"""The RunPod serverless worker: `python -m server.runpod.worker` (the container's runpod mode).

It applies RunPod's environment conventions, starts vLLM on localhost with the launcher's
`VLLMProcess` (or uses `VLLM_URL`), waits until it serves, then takes jobs with the RunPod SDK
(`server.runpod.jobs` describes the inputs). The jobs go through the edge's own app, whose
lifespan (its `Services`) runs once in this process: it starts with the first job, on the SDK's
event loop, and stops when that loop ends at the worker's shutdown (`server.runpod.lifespan`). If
vLLM's engine dies the worker exits, so RunPod replaces it. The SDK's own flags work too, e.g.
`--rp_serve_api --rp_api_port 8080` for a local job API (`/run`, `/runsync`, `/stream/{id}`).
"""

import atexit
import logging
import os
import signal
import sys
from types import FrameType

import runpod

from server.backend.vllm_client import BackendAuthFailed
from server.core.settings import get_settings
from server.process.launcher import VLLMDied
from server.runpod import environment
from server.runpod.backend import VLLMBackend
from server.runpod.jobs import Jobs

log = logging.getLogger("runpod.worker")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """End the worker through Python's exit, so that the event loop running the jobs ends in order
    and with it the edge app's lifespan (`server.runpod.lifespan`).

    The SDK's job loop sets a handler of its own; its local API (uvicorn) hands SIGTERM on to the
    handler it found once it has shut down, and the default one would kill the process there.
    """
    raise SystemExit(128 + signum)


def main() -> None:
    environment.apply()
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = VLLMBackend(settings)
    atexit.register(backend.stop)
    try:
        backend.start()
    except (VLLMDied, TimeoutError, BackendAuthFailed) as exc:
        log.error("%s", exc)
        backend.stop()
        sys.exit(1)

    def replace_me(reason: str) -> None:
        log.error("%s Exiting so that RunPod replaces this worker.", reason)
        backend.stop()
        os._exit(1)

    backend.watch(replace_me)
    jobs = Jobs(settings)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    runpod.serverless.start(
        {"handler": jobs.handle, "concurrency_modifier": jobs.concurrency, "return_aggregate_stream": True}
    )


if __name__ == "__main__":
    main()
