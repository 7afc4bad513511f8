"""CPU time and memory of a process (and its children) over a measured window."""

import threading
import time

import psutil


class ProcessMeter:
    """Samples a process's resident memory in a thread and reads its CPU time at start and stop.

    CPU is reported as cores used on average (CPU seconds per wall second). Children count with
    their parent (vLLM's engine runs in one) unless `children` is false (the load generator, whose
    children are the servers under test).
    """

    def __init__(self, pid: int, *, children: bool = True, interval_s: float = 0.25) -> None:
        self._process = psutil.Process(pid)
        self._children = children
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.rss_start = 0
        self.rss_peak = 0
        self._cpu_start = 0.0
        self._wall_start = 0.0
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def _processes(self) -> list[psutil.Process]:
        if not self._children:
            return [self._process]
        return [self._process, *self._process.children(recursive=True)]

    def _cpu(self) -> float:
        total = 0.0
        for process in self._processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total

    def _rss(self) -> int:
        total = 0
        for process in self._processes():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.rss_peak = max(self.rss_peak, self._rss())

    def __enter__(self) -> "ProcessMeter":
        self.rss_start = self.rss_peak = self._rss()
        self._cpu_start = self._cpu()
        self._wall_start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_s = self._cpu() - self._cpu_start
        self.wall_s = time.perf_counter() - self._wall_start

    def summary(self) -> dict[str, float]:
        return {
            "cpu_cores": round(self.cpu_s / self.wall_s, 3) if self.wall_s else 0.0,
            "cpu_s": round(self.cpu_s, 2),
            "rss_start_mb": round(self.rss_start / 2**20, 1),
            "rss_peak_mb": round(self.rss_peak / 2**20, 1),
        }
