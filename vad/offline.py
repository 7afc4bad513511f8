"""Offline speech segmentation of a whole 16 kHz recording.

Semantics follow silero-vad's ``get_speech_timestamps`` (its default
"longest silence" cut for over-long segments): a segment starts at the first
frame with probability >= ``threshold``; it ends where a run of frames below
``neg_threshold`` began, once that run has lasted ``min_silence_duration_ms``;
segments no longer than ``min_speech_duration_ms`` are dropped; a segment that
grows past ``max_speech_duration_s`` is cut at the longest pause (> 98 ms) seen
inside it, or at the current frame when it had none; finally segments are
padded by ``speech_pad_ms`` on each side, neighbours closer than two pads
splitting the gap between them.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

import numpy as np

from vad.model import FRAME_SAMPLES, SAMPLE_RATE, ProbabilityModel, SileroSequenceModel

_SAMPLES_PER_MS = SAMPLE_RATE // 1000


@dataclass(frozen=True)
class VADParams:
    """silero ``get_speech_timestamps`` parameters and defaults."""

    threshold: float = 0.5
    neg_threshold: float | None = None  # None: max(threshold - 0.15, 0.01)
    min_speech_duration_ms: int = 250
    min_silence_duration_ms: int = 100
    speech_pad_ms: int = 30
    max_speech_duration_s: float = float("inf")
    min_silence_at_max_speech_ms: int = 98

    @property
    def exit_threshold(self) -> float:
        return exit_threshold(self.threshold, self.neg_threshold)


def exit_threshold(threshold: float, neg_threshold: float | None) -> float:
    """The probability below which speech ends: silero's hysteresis, `threshold - 0.15` by default."""
    return neg_threshold if neg_threshold is not None else max(threshold - 0.15, 0.01)


@dataclass(frozen=True)
class SpeechSegment:
    start_sample: int
    end_sample: int

    @property
    def start(self) -> float:
        return self.start_sample / SAMPLE_RATE

    @property
    def end(self) -> float:
        return self.end_sample / SAMPLE_RATE


_default_model: SileroSequenceModel | None = None
_default_lock = threading.Lock()


def default_offline_model() -> SileroSequenceModel:
    """Process-wide sequence model (sessions are thread-safe, loading is not free)."""
    global _default_model
    with _default_lock:
        if _default_model is None:
            _default_model = SileroSequenceModel()
        return _default_model


def speech_segments(
    audio: np.ndarray,
    params: VADParams = VADParams(),
    model: ProbabilityModel | None = None,
) -> list[SpeechSegment]:
    """Speech segments of 16 kHz mono audio. Synchronous and CPU-bound.

    Memory beyond the input is one block of model input and activations (under
    10 MB) plus one float per 32 ms frame, so hour-long audio is fine. ``model``
    may be a :class:`~vad.model.SileroModel` or
    :class:`~vad.model.SileroSequenceModel` (the default, faster: see
    ``benchmarks/files_bench.py``).
    """
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {audio.shape}")
    if len(audio) == 0:
        return []
    probs = (model or default_offline_model()).probabilities(audio)
    return segments_from_probabilities(probs, len(audio), params)


def segments_from_probabilities(
    probs: np.ndarray, n_samples: int, params: VADParams = VADParams()
) -> list[SpeechSegment]:
    """Turn per-frame probabilities of ``n_samples`` of audio into padded segments."""
    spans = _speech_spans(probs, n_samples, params)
    return _padded(spans, n_samples, params.speech_pad_ms * _SAMPLES_PER_MS)


def _speech_spans(probs: np.ndarray, n_samples: int, params: VADParams) -> list[list[int]]:
    """Unpadded ``[start, end]`` sample spans."""
    enter, leave = params.threshold, params.exit_threshold
    min_speech = params.min_speech_duration_ms * _SAMPLES_PER_MS
    min_silence = params.min_silence_duration_ms * _SAMPLES_PER_MS
    min_cut_pause = params.min_silence_at_max_speech_ms * _SAMPLES_PER_MS
    pad = params.speech_pad_ms * _SAMPLES_PER_MS
    max_len = SAMPLE_RATE * params.max_speech_duration_s - FRAME_SAMPLES - 2 * pad

    spans: list[list[int]] = []
    start: int | None = None  # open segment
    quiet_from: int | None = None  # first frame of the current low run
    pauses: list[tuple[int, int]] = []  # (where, length) of pauses inside the open segment

    for i, p in enumerate(probs.tolist()):
        pos = i * FRAME_SAMPLES
        is_speech = p >= enter
        if is_speech and quiet_from is not None:
            if pos - quiet_from > min_cut_pause:
                pauses.append((quiet_from, pos - quiet_from))
            quiet_from = None
        if start is None:
            if is_speech:
                start = pos
            continue
        if pos - start > max_len:
            if pauses:
                cut, length = max(pauses, key=lambda pause: pause[1])
                spans.append([start, cut])
                start = cut + length
                quiet_from, pauses = None, []
            else:
                spans.append([start, pos])
                start, quiet_from, pauses = None, None, []
                continue
        if p < leave:
            if quiet_from is None:
                quiet_from = pos
            if pos - quiet_from >= min_silence:
                if quiet_from - start > min_speech:
                    spans.append([start, quiet_from])
                start, quiet_from, pauses = None, None, []

    if start is not None and n_samples - start > min_speech:
        spans.append([start, n_samples])
    return spans


def _padded(spans: list[list[int]], n_samples: int, pad: int) -> list[SpeechSegment]:
    if spans:
        spans[0][0] = max(0, spans[0][0] - pad)
    for current, following in itertools.pairwise(spans):
        gap = following[0] - current[1]
        grow = gap // 2 if gap < 2 * pad else pad
        current[1] = min(n_samples, current[1] + grow)
        following[0] = max(0, following[0] - grow)
    if spans:
        spans[-1][1] = min(n_samples, spans[-1][1] + pad)
    return [SpeechSegment(s, e) for s, e in spans]
