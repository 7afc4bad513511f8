"""Silero VAD ONNX models, run with onnxruntime and numpy only (no torch).

Both models come from the ``silero-vad`` package's data folder, located with
importlib.resources so silero's own (torch) code is never imported:

* ``silero_vad.onnx`` (:class:`SileroModel`): one 32 ms frame per stream per
  call, with the batch dimension free, so many streams can be stepped in one
  call. Used by the streaming detector and the batched engine.
* ``silero_vad_16k_sequence.onnx`` (:class:`SileroSequenceModel`): the same
  network evaluated over a block of consecutive frames of one stream in one
  call. Its probabilities equal the frame model's to float rounding (within
  1e-5 in the tests) and it is faster, because the convolutional front end runs
  over the whole block and only the LSTM is stepped (measured in
  ``benchmarks/files_bench.py``). Used for offline segmentation.

Every model input row is the frame's 64-sample left context (the tail of the
previous frame, zeros before the first frame) followed by the 512-sample frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Protocol

import numpy as np
import onnxruntime as ort

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512
CONTEXT_SAMPLES = 64
STATE_SIZE = 128
_SR = np.array(SAMPLE_RATE, dtype=np.int64)


def _model_path(name: str) -> str:
    return str(resources.files("silero_vad.data").joinpath(name))


def _session(path: str, intra_op_threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def frame_count(n_samples: int) -> int:
    """Frames covering ``n_samples``; the last partial frame is zero-padded."""
    return -(-n_samples // FRAME_SAMPLES)


def framed_blocks(audio: np.ndarray, block_frames: int) -> Iterator[np.ndarray]:
    """Yield ``[k, 576]`` model inputs (context + frame) for consecutive frames.

    Only one block is materialised at a time, so memory stays bounded for any
    length of audio; input of another dtype is converted block by block.
    """
    n = len(audio)
    total = frame_count(n)
    width = CONTEXT_SAMPLES + FRAME_SAMPLES
    for first in range(0, total, block_frames):
        k = min(block_frames, total - first)
        lo = first * FRAME_SAMPLES
        # Lay the block's samples (plus the 64 before it) out flat; row j is
        # then the window starting at j * 512, whose head is the context.
        flat = np.zeros(CONTEXT_SAMPLES + k * FRAME_SAMPLES, dtype=np.float32)
        ctx_lo = max(0, lo - CONTEXT_SAMPLES)
        chunk = audio[ctx_lo : min(n, lo + k * FRAME_SAMPLES)]
        offset = CONTEXT_SAMPLES - (lo - ctx_lo)
        flat[offset : offset + len(chunk)] = chunk
        rows = np.lib.stride_tricks.sliding_window_view(flat, width)[::FRAME_SAMPLES]
        yield np.ascontiguousarray(rows)


class ProbabilityModel(Protocol):
    """Anything that turns one stream of 16 kHz audio into per-frame probabilities."""

    def probabilities(self, audio: np.ndarray) -> np.ndarray: ...


class SileroModel:
    """Frame model: one frame for each of ``batch`` independent streams per call.

    ``InferenceSession.run`` is thread-safe and releases the GIL, so one
    instance can be shared by threads.
    """

    def __init__(self, intra_op_threads: int = 1, path: str | None = None):
        self._session = _session(path or _model_path("silero_vad.onnx"), intra_op_threads)

    @staticmethod
    def initial_state(batch: int = 1) -> np.ndarray:
        return np.zeros((2, batch, STATE_SIZE), dtype=np.float32)

    def run(self, inputs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``inputs`` ``[batch, 576]`` (context + frame), ``state`` ``[2, batch, 128]``.

        Returns probabilities ``[batch]`` and the next state.
        """
        probs, new_state = self._session.run(None, {"input": inputs, "state": state, "sr": _SR})
        return probs[:, 0], new_state

    def __call__(self, frames: np.ndarray, contexts: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``frames`` ``[batch, 512]``, ``contexts`` ``[batch, 64]``, ``state`` ``[2, batch, 128]``."""
        inputs = np.concatenate([contexts, frames], axis=1).astype(np.float32, copy=False)
        return self.run(inputs, state)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Per-frame probabilities of one stream, stepping frame by frame."""
        out = np.empty(frame_count(len(audio)), dtype=np.float32)
        state = self.initial_state()
        i = 0
        for block in framed_blocks(audio, 512):
            for row in block:
                p, state = self.run(row[None], state)
                out[i] = p[0]
                i += 1
        return out


class SileroSequenceModel:
    """Sequence model: many consecutive frames of one stream per call."""

    def __init__(self, intra_op_threads: int = 1, path: str | None = None, block_frames: int = 128):
        self._session = _session(path or _model_path("silero_vad_16k_sequence.onnx"), intra_op_threads)
        self._block_frames = block_frames

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        out = np.empty(frame_count(len(audio)), dtype=np.float32)
        h = np.zeros((1, 1, STATE_SIZE), dtype=np.float32)
        c = np.zeros_like(h)
        i = 0
        for block in framed_blocks(audio, self._block_frames):
            probs, h, c = self._session.run(None, {"input": block, "h": h, "c": c})
            out[i : i + len(block)] = probs
            i += len(block)
        return out
