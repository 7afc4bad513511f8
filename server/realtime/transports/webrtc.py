"""One WebRTC call's side of the runner's seam: events on the `oai-events` data channel, audio from
the microphone track.

The data channel carries the WebSocket protocol's JSON events both ways. The track's Opus is
decoded by aiortc (in its receiver's thread) and placed on the RTP clock (`webrtc.media`); the
decoded samples join the channel's messages in one queue, so the session applies audio and events
in the order they arrived, with the WebSocket's limits (the inbox's lag and backlog bounds shed a
session that falls behind). A track that ends stops the audio only; a channel that closes, or a
peer connection that fails or closes, ends the session at once.
"""

import asyncio
import logging
from contextlib import suppress
from typing import Any

from aiortc import MediaStreamTrack, RTCDataChannel
from aiortc.mediastreams import MediaStreamError

from server.core.tasks import cancel_and_wait
from server.realtime.events import Event
from server.realtime.runner import Frame, Live, Outcome, Samples, read_messages
from server.realtime.webrtc.media import RtpClockedAudio

log = logging.getLogger("edge.realtime")

SEND_BUFFER_BYTES = 1_048_576  # SCTP's send buffer a slow peer may fill before sending waits


class CallTransport:
    """Feed a call's channel messages and audio to the session; send its events on the channel."""

    def __init__(self, channel: RTCDataChannel, track: MediaStreamTrack | None, gone: asyncio.Event) -> None:
        self.channel = channel
        self._track = track
        self._gone = gone
        self._incoming: asyncio.Queue[Frame | None] = asyncio.Queue()
        self._drained = asyncio.Event()
        channel.bufferedAmountLowThreshold = SEND_BUFFER_BYTES // 2
        channel.on("message", self._incoming.put_nowait)
        channel.on("bufferedamountlow", self._drained.set)
        self._clock = RtpClockedAudio()
        self.audio_seconds = 0.0  # heard on the track, as sent (gaps not counted)

    async def send_text(self, text: str) -> None:
        while self.channel.bufferedAmount > SEND_BUFFER_BYTES:
            self._drained.clear()
            await self._drained.wait()
        if self.channel.readyState != "open":
            raise ConnectionError(f"the data channel is {self.channel.readyState}")
        self.channel.send(text)

    async def serve_input(self, live: Live) -> Outcome:
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(self._gone.wait(), name="webrtc-gone")]
        tasks[0].add_done_callback(lambda _: self._incoming.put_nowait(None))
        if self._track is not None:
            tasks.append(asyncio.create_task(self._hear(self._track), name="webrtc-audio"))
        try:
            return await read_messages(live, self._incoming.get)
        finally:
            await cancel_and_wait(tasks)

    @property
    def gap_seconds(self) -> float:
        """Silence filled in for audio the peer did not send (losses, DTX)."""
        return self._clock.gap_seconds

    def on_event(self, event: Event) -> None:
        pass  # the session's events reach the client through the protocol only

    async def _hear(self, track: MediaStreamTrack) -> None:
        with suppress(MediaStreamError):  # the track ended: the call goes on without audio
            while True:
                frame = await track.recv()
                samples = self._clock.samples(frame)  # type: ignore[arg-type]  # an audio track yields AudioFrames
                if len(samples):
                    self.audio_seconds += frame.samples / frame.sample_rate  # type: ignore[union-attr]
                    self._incoming.put_nowait(Samples(samples))
        log.debug("a call's audio track ended")
