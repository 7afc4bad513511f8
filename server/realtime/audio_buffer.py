"""A session's recent 16 kHz audio, and the sample positions that address it.

Positions are 16 kHz sample counts since the session's first audio.
"""

import numpy as np

from vad import SAMPLE_RATE

SAMPLES_PER_MS = SAMPLE_RATE // 1000
MIN_COMMIT_MS = 100  # the least audio a commit takes, and a partial transcript waits for


def to_ms(position: int) -> int:
    return position // SAMPLES_PER_MS


class AudioBuffer:
    """The session's recent 16 kHz audio, addressed by absolute sample position."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self.start = 0
        self.end = 0

    def append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._chunks.append(samples)
            self.end += len(samples)

    def slice(self, start: int, end: int) -> np.ndarray:
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)
        return audio[max(start - self.start, 0) : end - self.start]

    def drop_before(self, position: int) -> None:
        """Forget whole chunks that end at or before `position`."""
        while self._chunks and self.start + len(self._chunks[0]) <= position:
            self.start += len(self._chunks.pop(0))

    def clear(self) -> None:
        self._chunks = []
        self.start = self.end
