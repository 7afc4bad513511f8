"""Decode appended audio payloads to 16 kHz float32 samples, chunk by chunk."""

import numpy as np

from server.realtime.config import AudioFormat
from vad import StreamResampler, decode_alaw, decode_pcm16, decode_ulaw

DECODERS = {"pcm16": decode_pcm16, "pcmu": decode_ulaw, "pcma": decode_alaw}


class AudioInput:
    """One format's decoder plus a stream resampler that keeps its filter state between chunks.

    A PCM16 payload may split a sample across two appends; the odd byte is kept for the next one.
    """

    def __init__(self, audio_format: AudioFormat) -> None:
        self._decode = DECODERS[audio_format.encoding]
        self._sample_bytes = 2 if audio_format.encoding == "pcm16" else 1
        self._resampler = StreamResampler(audio_format.rate)
        self._carry = b""

    def decode(self, payload: bytes) -> np.ndarray:
        data = self._carry + payload
        whole = len(data) - len(data) % self._sample_bytes
        self._carry = data[whole:]
        return self._resampler.process(self._decode(data[:whole]))
