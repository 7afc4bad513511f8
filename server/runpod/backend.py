"""The vLLM a worker runs on: started on localhost with the launcher's `VLLMProcess`, or the one
at `VLLM_URL`; and a watchdog that ends the worker when vLLM's engine dies.

A worker whose engine is dead would fail every job it takes. Exiting instead lets RunPod replace
it with a fresh one. Death is vLLM's process exiting, or `/health` answering 503 (vLLM's signal
that its engine failed); a `/health` that cannot be reached or is missing says nothing.
"""

import logging
import threading
import time
from collections.abc import Callable

import httpx

from server.backend.vllm_client import AUTH_REFUSALS, BackendAuthFailed
from server.core.settings import Settings
from server.process.launcher import VLLMProcess

log = logging.getLogger("runpod.backend")

WATCH_INTERVAL_S = 5.0


class VLLMBackend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = None if settings.vllm_url else VLLMProcess(settings)
        self.health_url = settings.backend_url.removesuffix("/v1") + "/health"
        self._headers = {"Authorization": f"Bearer {settings.vllm_api_key}"} if settings.vllm_api_key else {}

    def start(self) -> None:
        """Start vLLM (or find the external one) and block until it serves; raise if it cannot.

        Raises `VLLMDied` when the local vLLM exits, `TimeoutError` after `VLLM_STARTUP_TIMEOUT_S`,
        and `BackendAuthFailed` at once when the external vLLM refuses `VLLM_API_KEY` (401/403): a
        configuration error that waiting cannot mend.
        """
        timeout = self.settings.vllm_startup_timeout_s
        if self.process is not None:
            self.process.start()
            self.process.wait_healthy(timeout)
            return
        # An external server may be a RunPod endpoint, which has no /health: ask for its models.
        deadline = time.monotonic() + timeout
        models_url = f"{self.settings.backend_url}/models"
        log.info("waiting for the vLLM at %s", self.settings.backend_url)
        while time.monotonic() < deadline:
            try:
                response = httpx.get(models_url, headers=self._headers, timeout=10)
                if response.status_code in AUTH_REFUSALS:
                    raise BackendAuthFailed(
                        self.settings.backend_url, response.status_code, key_sent=bool(self.settings.vllm_api_key)
                    )
                if response.status_code == 200 and response.json().get("data"):
                    return
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"The vLLM at {self.settings.backend_url} did not answer in {timeout:.0f} s.")

    def death(self) -> str | None:
        """Why vLLM is dead, or None while it is (as far as can be told) alive."""
        if self.process is not None and self.process.returncode is not None:
            return f"vLLM exited with code {self.process.returncode}:\n{self.process.last_lines()}"
        try:
            status = httpx.get(self.health_url, headers=self._headers, timeout=10).status_code
        except httpx.TransportError:
            return None
        return "vLLM's /health answers 503: its engine is dead." if status == 503 else None

    def watch(self, on_death: Callable[[str], None], interval_s: float = WATCH_INTERVAL_S) -> None:
        """Call `on_death(reason)` from a daemon thread once vLLM is found dead."""

        def loop() -> None:
            while (reason := self.death()) is None:
                time.sleep(interval_s)
            on_death(reason)

        threading.Thread(target=loop, name="vllm-watchdog", daemon=True).start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
