"""A long file transcribed through the edge in the background, for as long as a benchmark needs
it: streamed (`stream=true`), so that stopping it closes the connection and the edge cancels the
chunks still running, exactly as a client that goes away.
"""

import threading
import time
from typing import Any

import httpx

from benchmarks import processes
from benchmarks.speech import long_file


class BackgroundFile(threading.Thread):
    """POSTs a `seconds`-long recording after `delay_s`; `stop()` hangs up if it is still running."""

    def __init__(self, edge_url: str, seconds: float, delay_s: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.url = f"{edge_url}/v1/audio/transcriptions"
        self.data = long_file(seconds, processes.WORK).read_bytes()
        self.seconds = seconds
        self.delay_s = delay_s
        self.first_delta = threading.Event()
        self.first_delta_at: float | None = None
        self._stop_event = threading.Event()
        self.submitted_at: float | None = None
        self.finished_at: float | None = None
        self.deltas = 0
        self.status: int | None = None
        self.error: str | None = None
        self.start()

    def run(self) -> None:
        if self._stop_event.wait(self.delay_s):
            return
        self.submitted_at = time.perf_counter()
        try:
            with httpx.stream(
                "POST",
                self.url,
                data={"model": "whisper-1", "stream": "true"},
                files={"file": ("long.wav", self.data, "audio/wav")},
                timeout=httpx.Timeout(3600, connect=10),
            ) as response:
                self.status = response.status_code
                for line in response.iter_lines():
                    if '"transcript.text.delta"' in line:
                        self.deltas += 1
                        if self.first_delta_at is None:
                            self.first_delta_at = time.perf_counter()
                        self.first_delta.set()
                    elif '"transcript.text.done"' in line:
                        self.finished_at = time.perf_counter()
                    if self._stop_event.is_set():
                        return
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> dict[str, Any]:
        """Hang up (if still running) and say what happened."""
        self._stop_event.set()
        self.join(60)
        return {
            "audio_s": self.seconds,
            "submitted_after_s": self.delay_s,
            "status": self.status,
            "deltas_received": self.deltas,
            "finished": self.finished_at is not None,
            "wall_s": None
            if self.finished_at is None or self.submitted_at is None
            else round(self.finished_at - self.submitted_at, 2),
            "error": self.error,
        }
