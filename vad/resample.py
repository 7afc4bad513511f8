"""Sample-rate conversion of chunked streams to 16 kHz with soxr."""

from __future__ import annotations

import numpy as np
import soxr

from vad.model import SAMPLE_RATE


class StreamResampler:
    """Resample a mono stream chunk by chunk, keeping filter state between chunks.

    Output is delayed by the filter's latency; pass ``last=True`` with the
    final chunk to drain it. Concatenated outputs match ``soxr.resample`` (HQ)
    of the whole signal up to filter-edge rounding.
    """

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE):
        self._passthrough = rate_in == rate_out
        self._stream = (
            None if self._passthrough else soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")
        )

    def process(self, chunk: np.ndarray, last: bool = False) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32)
        if self._stream is None:
            return chunk.copy()
        return self._stream.resample_chunk(chunk, last=last)
