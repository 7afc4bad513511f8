"""Whisper's log-mel features in numpy, for a batch of equal-length 16 kHz windows.

The recipe is Whisper's feature extractor as Smart Turn v3 was trained on it
(Hugging Face's ``WhisperFeatureExtractor`` with ``do_normalize=True``): each
window is scaled to zero mean and unit variance, then a centred STFT (periodic
Hann window of 400 samples, hop 160, reflect padding) gives a power spectrum,
an 80-band Slaney mel filter bank (librosa's default, area-normalised) maps it
onto mels, and the log10 (floored at 1e-10) is clamped to 8 dB below the
window's maximum and mapped by ``(x + 4) / 4``. The STFT's last frame is
dropped, so N samples give ``N // 160`` frames.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vad.model import SAMPLE_RATE

N_FFT = 400
HOP = 160
N_MELS = 80
_MEL_FLOOR = 1e-10
_NORM_EPS = 1e-7
_DYNAMIC_RANGE = 8.0

# The Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_LINEAR_LIMIT_HZ = 1000.0
_LINEAR_LIMIT_MEL = 15.0
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: npt.ArrayLike) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log = _LINEAR_LIMIT_MEL + np.log(np.maximum(hz, _LINEAR_LIMIT_HZ) / _LINEAR_LIMIT_HZ) / _LOG_STEP
    return np.where(hz < _LINEAR_LIMIT_HZ, linear, log)


def mel_to_hz(mel: npt.ArrayLike) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * 200.0 / 3.0
    log = _LINEAR_LIMIT_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _LINEAR_LIMIT_MEL) - _LINEAR_LIMIT_MEL))
    return np.where(mel < _LINEAR_LIMIT_MEL, linear, log)


def mel_filters() -> np.ndarray:
    """``[N_MELS, N_FFT // 2 + 1]`` triangular filters from 0 Hz to Nyquist, each of unit area (Slaney)."""
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    bins = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return triangles * (2.0 / (upper - lower))


def hann_window() -> np.ndarray:
    """The periodic Hann window (``torch.hann_window``'s default), as Whisper's STFT uses."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)


_FILTERS_T = mel_filters().T.copy()
_WINDOW = hann_window()


def power_spectrogram(windows: np.ndarray) -> np.ndarray:
    """``[batch, samples]`` -> ``[batch, frames, N_FFT // 2 + 1]`` power of the centred STFT (float64)."""
    half = N_FFT // 2
    padded = np.pad(windows.astype(np.float64), ((0, 0), (half, half)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[:, ::HOP]
    spectrum = np.fft.rfft(frames * _WINDOW, axis=-1)
    return spectrum.real**2 + spectrum.imag**2


def log_mel(windows: np.ndarray) -> np.ndarray:
    """``[batch, samples]`` float32 audio -> ``[batch, N_MELS, samples // HOP]`` float32 features."""
    if windows.ndim != 2:
        raise ValueError(f"expected [batch, samples], got shape {windows.shape}")
    x = windows.astype(np.float32, copy=False)
    # Normalised in float32, as the reference does before its STFT promotes to float64.
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    x = (x - mean) / np.sqrt(var + np.float32(_NORM_EPS))
    mel = power_spectrogram(x)[:, :-1] @ _FILTERS_T  # [batch, frames, mels]
    logs = np.log10(np.maximum(mel, _MEL_FLOOR))
    floor = logs.max(axis=(1, 2), keepdims=True) - _DYNAMIC_RANGE
    logs = (np.maximum(logs, floor) + 4.0) / 4.0
    return np.ascontiguousarray(logs.transpose(0, 2, 1), dtype=np.float32)
