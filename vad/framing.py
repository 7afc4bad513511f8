"""Cut a stream of arbitrary-size chunks into model inputs (64-sample context + 512-sample frame)."""

from __future__ import annotations

import numpy as np

from vad.model import CONTEXT_SAMPLES, FRAME_SAMPLES


class Framer:
    """Buffers the tail of the stream that does not fill a frame yet."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self.samples_seen = 0

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append ``samples``; return ``[k, 576]`` inputs for the frames now complete."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.samples_seen += len(samples)
        buffered = np.concatenate([self._pending, samples])
        k = len(buffered) // FRAME_SAMPLES
        self._pending = buffered[k * FRAME_SAMPLES :]
        if k == 0:
            return np.zeros((0, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
        frames = buffered[: k * FRAME_SAMPLES].reshape(k, FRAME_SAMPLES)
        inputs = np.empty((k, CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
        inputs[:, CONTEXT_SAMPLES:] = frames
        inputs[0, :CONTEXT_SAMPLES] = self._context
        inputs[1:, :CONTEXT_SAMPLES] = frames[:-1, -CONTEXT_SAMPLES:]
        self._context = frames[-1, -CONTEXT_SAMPLES:].copy()
        return inputs
