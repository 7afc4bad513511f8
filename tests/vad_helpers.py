"""Shared helpers for the VAD tests: decoding test recordings and the silero-vad reference."""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

import av
import numpy as np
import soxr

DATA = Path(__file__).parent / "data"
RECORDINGS = ["jfk.flac", "silero_test.wav", "silero_test.mp3", "silero_test.opus"]
RATE = 16000


@cache
def load_recording(name: str) -> np.ndarray:
    """Decode a file in tests/data with PyAV to mono float32, resampled to 16 kHz with soxr."""
    with av.open(str(DATA / name)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        to_mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts = []
        for frame in container.decode(stream):
            parts.extend(f.to_ndarray()[0] for f in to_mono.resample(frame))
        parts.extend(f.to_ndarray()[0] for f in to_mono.resample(None))
    audio = np.concatenate(parts).astype(np.float32)
    if rate != RATE:
        audio = soxr.resample(audio, rate, RATE).astype(np.float32)
    audio.flags.writeable = False
    return audio


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


def long_mix() -> np.ndarray:
    """All recordings with pauses of assorted lengths between them and some noise (~110 s)."""
    rng = np.random.default_rng(7)
    pieces = [silence(0.7)]
    for i, name in enumerate(RECORDINGS * 2):
        pieces.append(load_recording(name))
        pause = silence([0.05, 0.2, 0.45, 1.3][i % 4])
        pieces.append(pause + rng.normal(0, 0.002, len(pause)).astype(np.float32))
    return np.concatenate(pieces)


@lru_cache(maxsize=1)
def silero_reference_model():
    """silero-vad's own ONNX wrapper (frame model, one stream)."""
    from silero_vad import load_silero_vad

    return load_silero_vad(onnx=True)


def silero_timestamps(audio: np.ndarray, **kwargs) -> list[tuple[int, int]]:
    import torch
    from silero_vad import get_speech_timestamps

    spans = get_speech_timestamps(torch.from_numpy(audio.copy()), silero_reference_model(), **kwargs)
    return [(s["start"], s["end"]) for s in spans]
