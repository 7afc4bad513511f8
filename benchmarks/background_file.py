"""Long files transcribed through the edge in the background, back to back, for as long as a
benchmark needs them: streamed (`stream=true`), so that stopping them closes the connection and
the edge cancels the chunks still running, exactly as a client that goes away.
"""

import threading
import time
from typing import Any

import httpx

from benchmarks import processes
from benchmarks.speech import long_file


class BackgroundFile(threading.Thread):
    """POSTs `count` `seconds`-long recordings one after the other, the first after `delay_s`;
    `stop()` hangs up if one is still running."""

    def __init__(self, edge_url: str, seconds: float, delay_s: float = 0.0, count: int = 1) -> None:
        super().__init__(daemon=True)
        self.url = f"{edge_url}/v1/audio/transcriptions"
        self.data = long_file(seconds, processes.WORK).read_bytes()
        self.seconds = seconds
        self.count = count
        self.delay_s = delay_s
        self.first_delta = threading.Event()
        self.first_delta_at: float | None = None
        self._stop_event = threading.Event()
        self.submitted_at: float | None = None
        self.finish_times: list[float] = []
        self.delta_times: list[float] = []
        self.status: int | None = None
        self.error: str | None = None
        self.start()

    def run(self) -> None:
        if self._stop_event.wait(self.delay_s):
            return
        self.submitted_at = time.perf_counter()
        for _ in range(self.count):
            if self._stop_event.is_set() or not self._one():
                return

    def _one(self) -> bool:
        """Transcribe the file once; False if stopped or failed."""
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
                        self.delta_times.append(time.perf_counter())
                        if self.first_delta_at is None:
                            self.first_delta_at = time.perf_counter()
                        self.first_delta.set()
                    elif '"transcript.text.done"' in line:
                        self.finish_times.append(time.perf_counter())
                    if self._stop_event.is_set():
                        return False
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        return self.status == 200

    @property
    def deltas(self) -> int:
        return len(self.delta_times)

    def rate(self, start: float, end: float) -> float:
        """File text deltas per second received between `start` and `end` (perf_counter times)."""
        return round(sum(1 for at in self.delta_times if start <= at < end) / (end - start), 2)

    @property
    def finished_at(self) -> float | None:
        """When the last of the files was done, if all were."""
        return self.finish_times[-1] if len(self.finish_times) == self.count else None

    def stop(self) -> dict[str, Any]:
        """Hang up (if still running) and say what happened."""
        self._stop_event.set()
        self.join(60)
        first = self.first_delta_at
        return {
            "audio_s": self.seconds,
            "files": self.count,
            "submitted_after_s": self.delay_s,
            "status": self.status,
            "deltas_received": self.deltas,
            "first_delta_after_s": None
            if first is None or self.submitted_at is None
            else round(first - self.submitted_at, 2),
            "files_finished": len(self.finish_times),
            "wall_s": [round(at - (self.submitted_at or at), 2) for at in self.finish_times],
            "error": self.error,
        }
