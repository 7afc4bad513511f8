"""Decode raw telephone/PCM payloads (as sent by realtime clients) to float32 in [-1, 1].

G.711 u-law and A-law are expanded through 256-entry tables built from the
ITU-T G.711 segment formulas, scaled like 16-bit PCM (divided by 32768).
"""

from __future__ import annotations

import numpy as np


def _ulaw_table() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.float32) / 32768.0


def _alaw_table() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.float32) / 32768.0


_ULAW = _ulaw_table()
_ALAW = _alaw_table()


def decode_pcm16(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM."""
    if len(data) % 2:
        raise ValueError("pcm16 payload has an odd number of bytes")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def decode_ulaw(data: bytes) -> np.ndarray:
    return _ULAW[np.frombuffer(data, dtype=np.uint8)]


def decode_alaw(data: bytes) -> np.ndarray:
    return _ALAW[np.frombuffer(data, dtype=np.uint8)]
