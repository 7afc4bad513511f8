"""Smart Turn v3.2: has the speaker finished their turn? (onnxruntime and numpy only).

The model (``smart-turn-v3.2-cpu.onnx``, int8, BSD-2, from the ``pipecat-ai``
wheel; ``./serve.sh`` and the Dockerfile install the file alone into the edge's
environment at :data:`DEFAULT_MODEL_PATH`) reads the last 8 s of 16 kHz audio
as Whisper log-mel features (:mod:`vad.log_mel`), input ``input_features``
``[batch, 80, 800]``, and gives the probability that the turn is complete,
output ``[batch, 1]`` (named ``logits`` but already through a sigmoid). Shorter
audio is zero-padded at the start, as the reference does. It is meant to be
asked at a pause the VAD found: it judges the speech's end (wording, intonation),
and silence alone reads as complete.

``precision="float32"`` runs the same weights with the quantization folded away
(:mod:`vad.qdq`): readings that do not depend on the CPU's int8 kernels, for more
CPU per call (benchmarks/README.md, "Turn completion model").

:class:`SmartTurnModel` runs a batch in one call. :class:`BatchedSmartTurn`
lets many sessions ask at once: calls that arrive while a run is in progress
are gathered into the next run, which takes at most ``max_batch`` of them, in
a worker thread, so that features and inference run off the event loop.
Cost per call and batch size: benchmarks/README.md, "Turn completion model".
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from vad.log_mel import log_mel
from vad.model import SAMPLE_RATE

WINDOW_SAMPLES = 8 * SAMPLE_RATE
Precision = Literal["int8", "float32"]
DEFAULT_MODEL_PATH = Path(sys.prefix, "share", "smart-turn", "smart-turn-v3.2-cpu.onnx")


def model_window(audio: np.ndarray) -> np.ndarray:
    """The model's view of ``audio``: its last 8 s as float32, zero-padded at the start.

    Raises TypeError for anything but a 1-D floating-point array (16 kHz samples,
    nominally in [-1, 1]; int16 PCM must be converted first), ValueError for
    an empty array or non-finite samples in the last 8 s.
    """
    if not isinstance(audio, np.ndarray) or not np.issubdtype(audio.dtype, np.floating):
        raise TypeError(
            f"audio must be a floating-point numpy array, got {type(audio).__name__} {getattr(audio, 'dtype', '')}"
        )
    if audio.ndim != 1:
        raise TypeError(f"audio must be 1-D (mono 16 kHz samples), got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError("audio is empty")
    tail = audio[-WINDOW_SAMPLES:]
    if not np.isfinite(tail).all():
        raise ValueError("audio has NaN or infinite samples")
    window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    window[WINDOW_SAMPLES - len(tail) :] = tail
    return window


class SmartTurnModel:
    """The ONNX model on onnxruntime; ``run`` is thread-safe, so one instance can be shared."""

    def __init__(
        self, path: str | Path | None = None, intra_op_threads: int = 1, precision: Precision = "int8"
    ) -> None:
        path = Path(path) if path is not None else DEFAULT_MODEL_PATH
        if not path.is_file():
            raise FileNotFoundError(
                f"Smart Turn model not found at {path} (./serve.sh installs it; see SMART_TURN_MODEL)"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.precision = precision
        graph: str | bytes = str(path)
        if precision == "float32":
            # Imported here: onnx is needed only for folding, and every process that imports vad
            # would otherwise pay for importing it.
            import onnx

            from vad.qdq import fold_qdq

            graph = fold_qdq(onnx.load(path)).SerializeToString()
        self._session = ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])

    def predict(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """Probability that each recording ends a finished turn, ``[len(audios)]`` float32, in one model call."""
        if not audios:
            return np.empty(0, dtype=np.float32)
        return self.predict_windows(np.stack([model_window(a) for a in audios]))

    def predict_windows(self, windows: np.ndarray) -> np.ndarray:
        """As ``predict``, for ``[batch, WINDOW_SAMPLES]`` windows made by :func:`model_window`."""
        return self.predict_features(log_mel(windows))

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """As ``predict``, for ``[batch, 80, 800]`` features made by :func:`vad.log_mel.log_mel`."""
        (probs,) = self._session.run(None, {"input_features": features})
        return np.asarray(probs, dtype=np.float32)[:, 0]


class BatchedSmartTurn:
    """``await completion(audio)`` from any number of sessions; see the module docstring for the batching."""

    def __init__(self, model: SmartTurnModel, *, max_batch: int = 16) -> None:
        self._model = model
        self._max_batch = max_batch
        self._pending: list[tuple[np.ndarray, asyncio.Future[float]]] = []
        self._runner: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")

    async def completion(self, audio: np.ndarray) -> float:
        """Probability that ``audio`` (16 kHz float samples up to now) ends a finished turn.

        Bad input raises here (see :func:`model_window`), without failing the other callers' run.
        """
        window = model_window(audio)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending.append((window, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._drain(), name="smart-turn")
        return await future

    def close(self) -> None:
        """Stop the worker thread once the run in progress ends; later calls fail."""
        self._executor.shutdown(wait=False)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = [(w, f) for w, f in self._pending[: self._max_batch] if not f.done()]
                del self._pending[: self._max_batch]
                if not batch:
                    continue
                try:
                    probs = await loop.run_in_executor(
                        self._executor, self._model.predict_windows, np.stack([w for w, _ in batch])
                    )
                except Exception as exc:  # fail this run's callers, keep serving later ones
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), prob in zip(batch, probs.tolist(), strict=True):
                    if not future.done():
                        future.set_result(prob)
        finally:
            self._runner = None
