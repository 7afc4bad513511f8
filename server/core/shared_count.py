"""Realtime session slots, and the count behind them that the edge's worker processes (`WORKERS` > 1)
share, so `REALTIME_MAX_SESSIONS` and `API_KEY_MAX_SESSIONS` hold for the whole edge rather than
per process.

The count lives in one small JSON file, `{pid: sessions}`, in the launcher's shared directory and
changes under an exclusive `fcntl` lock. Each process only ever changes its own entry; entries of
processes that are gone (a worker that crashed with sessions open) are dropped by the next one
that takes the lock, so a dead worker never keeps slots taken.
"""

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class SharedCount:
    """This process's share of a count kept in `path`, bounded across all processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.touch(exist_ok=True)

    def try_add(self, limit: int) -> bool:
        """Add one to this process's entry unless all processes together hold `limit` already."""
        with self._locked() as (counts, file):
            if sum(counts.values()) >= limit:
                return False
            pid = os.getpid()
            counts[pid] = counts.get(pid, 0) + 1
            _write(file, counts)
            return True

    def remove(self) -> None:
        with self._locked() as (counts, file):
            pid = os.getpid()
            left = counts.get(pid, 0) - 1
            if left > 0:
                counts[pid] = left
            else:
                counts.pop(pid, None)
            _write(file, counts)

    @contextmanager
    def _locked(self) -> Iterator[tuple[dict[int, int], IO[str]]]:
        with self.path.open("r+") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            try:
                text = file.read()
                raw: dict[str, int] = json.loads(text) if text else {}
                yield {int(pid): n for pid, n in raw.items() if pid_running(int(pid))}, file
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)


def _write(file: IO[str], counts: dict[int, int]) -> None:
    file.seek(0)
    file.truncate()
    file.write(json.dumps({str(pid): n for pid, n in counts.items()}))
    file.flush()


def pid_running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, exited but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class SessionSlots:
    """Counts open sessions against a limit (`REALTIME_MAX_SESSIONS`, or one key's
    `API_KEY_MAX_SESSIONS`): this process's in `active`, and with `shared` (several workers) all
    workers' together, so the limit holds for the whole edge."""

    def __init__(self, limit: int, shared: SharedCount | None = None) -> None:
        self.limit = limit
        self.active = 0
        self._shared = shared

    def try_acquire(self) -> bool:
        if self._shared is not None:
            if not self._shared.try_add(self.limit):
                return False
        elif self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1
        if self._shared is not None:
            self._shared.remove()
