"""The microphone track of a WebRTC call as 16 kHz mono samples on the RTP clock.

A frame's place in time is its timestamp (aiortc maps RTP timestamps to `pts`, counted from the
first packet), not the order frames happen to arrive in: packets lost, or not sent at all while the
speaker is silent (Opus DTX), leave a gap that is filled with silence, so that positions in the
session (`audio_start_ms`, the VAD's silence windows) mean the same as on the WebSocket. Audio that
overlaps what was already heard (a late duplicate) is dropped.
"""

import logging
from fractions import Fraction

import av
import numpy as np
from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer

from vad import StreamResampler

log = logging.getLogger("edge.realtime")

# aiortc's audio receiver holds this many packets before it decodes the first (a fixed delay);
# the name is aiortc's private one (pinned minor version; tests/test_webrtc_media.py checks it).
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"

MAX_GAP_S = 10.0  # a longer gap is filled with this much silence: memory stays bounded whatever the peer sends


class RtpClockedAudio:
    """Turn decoded frames into 16 kHz float32 samples, gaps filled from the timestamps."""

    def __init__(self) -> None:
        self._rate: int | None = None
        self._resampler: StreamResampler | None = None
        self._next: int | None = None  # the timestamp, in samples at `_rate`, the next frame should start at
        self.gap_seconds = 0.0  # silence inserted

    def samples(self, frame: av.AudioFrame) -> np.ndarray:
        """The 16 kHz samples `frame` adds, preceded by the silence of any gap before it."""
        rate = frame.sample_rate
        if rate != self._rate or self._resampler is None:
            self._rate, self._resampler, self._next = rate, StreamResampler(rate), None
        audio = _mono(frame)
        start = _timestamp(frame, rate)
        if start is not None and self._next is not None:
            gap = start - self._next
            if gap > 0:
                filled = min(gap, int(MAX_GAP_S * rate))
                self.gap_seconds += filled / rate
                audio = np.concatenate([np.zeros(filled, np.float32), audio])
            elif gap < 0:
                audio = audio[-gap:]  # the part already heard
        if start is not None:
            self._next = max(start + frame.samples, self._next or 0)
        return self._resampler.process(audio)


def _mono(frame: av.AudioFrame) -> np.ndarray:
    """The frame's samples as mono float32 in [-1, 1] (a browser sends Opus as stereo s16)."""
    data: np.ndarray = frame.to_ndarray()
    channels = len(frame.layout.channels)
    data = data.reshape(channels, -1) if frame.format.is_planar else data.reshape(-1, channels).T
    mono = data.astype(np.float32).mean(axis=0)
    if data.dtype.kind in "iu":
        mono /= float(np.iinfo(data.dtype).max) + 1
    return mono


def _timestamp(frame: av.AudioFrame, rate: int) -> int | None:
    """The frame's start in samples at `rate`, from its pts; None when it has none."""
    if frame.pts is None:
        return None
    time_base = frame.time_base or Fraction(1, rate)
    return round(frame.pts * time_base * rate)


def without_prefetch(receiver: RTCRtpReceiver) -> None:
    """Make `receiver` decode each audio packet as soon as it is in order.

    aiortc buffers four audio packets (80 ms) before it decodes any, which every turn's end would
    wait for. Without that prefetch, reordering is still handled: the buffer still waits for a
    missing packet (up to its capacity) before it goes on.
    """
    buffer = getattr(receiver, _JITTER_BUFFER, None)
    if not isinstance(buffer, JitterBuffer):
        log.warning("aiortc's receiver has no %s: the call's audio keeps aiortc's prefetch delay", _JITTER_BUFFER)
        return
    setattr(receiver, _JITTER_BUFFER, JitterBuffer(capacity=buffer.capacity, prefetch=0))
