"""The RunPod serverless worker: `python -m server.runpod_worker` (the container's runpod mode).

It applies RunPod's environment conventions, starts vLLM on localhost with the launcher's
`VLLMProcess` (or uses `VLLM_URL`), waits until it serves, then takes jobs with the RunPod SDK
(`server.runpod.jobs` describes the inputs). If vLLM's engine dies the worker exits, so RunPod
replaces it. The SDK's own flags work too, e.g. `--rp_serve_api --rp_api_port 8080` for a local
job API (`/run`, `/runsync`, `/stream/{id}`).
"""

import atexit
import logging
import os
import sys

import runpod

from server.launcher import VLLMDied
from server.runpod import environment
from server.runpod.backend import VLLMBackend
from server.runpod.jobs import Jobs
from server.settings import get_settings

log = logging.getLogger("runpod.worker")


def main() -> None:
    environment.apply()
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    backend = VLLMBackend(settings)
    atexit.register(backend.stop)
    try:
        backend.start()
    except (VLLMDied, TimeoutError) as exc:
        log.error("%s", exc)
        backend.stop()
        sys.exit(1)

    def replace_me(reason: str) -> None:
        log.error("%s Exiting so that RunPod replaces this worker.", reason)
        backend.stop()
        os._exit(1)

    backend.watch(replace_me)
    jobs = Jobs(settings)
    runpod.serverless.start(
        {"handler": jobs.handle, "concurrency_modifier": jobs.concurrency, "return_aggregate_stream": True}
    )


if __name__ == "__main__":
    main()
