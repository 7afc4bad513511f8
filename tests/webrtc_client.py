"""A WebRTC peer for the tests, as a browser is one: aiortc with a microphone track that plays a
recording in real time (RTP clock from the samples sent) and the `oai-events` data channel.

Every candidate stays on loopback: the client gathers on 127.0.0.1 only (the same aioice hook the
edge's `WEBRTC_HOST_ADDRESSES` installs), and `only_loopback` checks each offer and answer before
either side is given the other's, so no check is ever sent to another address.
"""

import asyncio
import fractions
import json
import time
from typing import Any

import aioice.ice
import av
import numpy as np
import soxr
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

RTP_RATE = 48000
FRAME = 960  # 20 ms, as browsers send Opus


def gather_on_loopback() -> None:
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def only_loopback(sdp: str) -> str:
    """`sdp`, after checking that every candidate in it is on 127.0.0.1."""
    candidates = [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]
    assert candidates and set(candidates) == {"127.0.0.1"}, f"candidates off loopback: {candidates}"
    return sdp


class Microphone(MediaStreamTrack):
    """Plays 16 kHz float audio as 48 kHz frames of 20 ms in real time, then silence."""

    kind = "audio"

    def __init__(self, audio: np.ndarray) -> None:
        super().__init__()
        self._pcm = (np.clip(soxr.resample(audio, 16000, RTP_RATE), -1, 1) * 32767).astype(np.int16)
        self._sent = 0
        self._started: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._started is None:
            self._started = time.monotonic()
        await asyncio.sleep(max(0.0, self._started + self._sent / RTP_RATE - time.monotonic()))
        chunk = self._pcm[self._sent : self._sent + FRAME]
        chunk = np.concatenate([chunk, np.zeros(FRAME - len(chunk), np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RTP_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, RTP_RATE)
        self._sent += FRAME
        return frame


class Peer:
    """One call's client side: make the offer, take the answer, collect the server's events."""

    def __init__(self, audio: np.ndarray | None = None, channel: bool = True) -> None:
        gather_on_loopback()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # none: aiortc's default is Google's STUN
        if audio is not None:
            self.pc.addTrack(Microphone(audio))
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.channel = self.pc.createDataChannel("oai-events") if channel else None
        if self.channel is not None:
            self.channel.on("message", lambda text: self.events.put_nowait(json.loads(text)))
            self.channel.on("close", self.closed.set)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return only_loopback(self.pc.localDescription.sdp)

    async def connect(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(only_loopback(answer), "answer"))

    async def next_event(self, timeout_s: float = 30) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), timeout_s)

    async def until(self, event_type: str, timeout_s: float = 60) -> dict[str, Any]:
        """The next event of `event_type`, after those before it."""
        async with asyncio.timeout(timeout_s):
            while (event := await self.events.get())["type"] != event_type:
                pass
        return event

    def send(self, event: dict[str, Any]) -> None:
        assert self.channel is not None
        self.channel.send(json.dumps(event))

    async def close(self) -> None:
        await self.pc.close()
