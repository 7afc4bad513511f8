"""WebRTC calls: answer an offer, run the call's realtime session, end it, and keep count.

A call is admitted like a WebSocket session (one of its key's sessions and one of the edge's, held
from the offer to the end, so calls are bounded by `REALTIME_MAX_SESSIONS` too). The offer must
bring a data channel (the browser creates `oai-events` before offering); its audio track, if any,
is the microphone. After the answer the peer has `WEBRTC_CONNECT_TIMEOUT_S` to complete ICE and
DTLS and open the channel, or the call is dropped (logged, counted). Then the session runs as on
any transport (`runner.run_session`); it ends when the channel closes, the peer connection fails
or closes (a peer that vanishes: ICE consent checks stop), the call is hung up, or the session
ends on its own (limits, shedding), and the slot and the session's vLLM requests are freed at once.
Every call that ends logs one line saying why.
"""

import asyncio
import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from server.core import metrics
from server.core.auth import Identity
from server.core.errors import APIError
from server.core.tasks import cancel_and_wait
from server.realtime.admission import admitted
from server.realtime.ids import new_id
from server.realtime.runner import CLOSE_TIMEOUT_S, End, Outcome, WireProtocol, run_session
from server.realtime.services import RealtimeServices
from server.realtime.transports.webrtc import CallTransport
from server.realtime.webrtc.ice import announce, configuration
from server.realtime.webrtc.media import without_prefetch

log = logging.getLogger("edge.realtime")

EVENTS_CHANNEL = "oai-events"
SHED = {End.LAGGING: "lagging", End.SLOW_CLIENT: "slow_client"}


@dataclass(frozen=True)
class Answer:
    call_id: str
    sdp: str


@dataclass
class _Call:
    call_id: str
    identity: Identity
    peer: str
    pc: RTCPeerConnection
    # The channel's transport, made as the channel arrives so that no message sent at open is lost.
    channel: asyncio.Future[CallTransport] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    track: MediaStreamTrack | None = None
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # the channel closed or the connection failed
    hung_up: bool = False
    task: asyncio.Task[None] | None = None


def invalid_offer(message: str) -> APIError:
    return APIError(400, message, param="sdp", code="invalid_offer")


class Calls:
    """The app's WebRTC calls, by id."""

    def __init__(self) -> None:
        self._calls: dict[str, _Call] = {}

    def __len__(self) -> int:
        return len(self._calls)

    async def answer(
        self, offer: str, protocol: WireProtocol, identity: Identity, peer: str, services: RealtimeServices
    ) -> Answer:
        """Admit a call, answer its offer, and start serving it; raise `APIError` for a bad offer
        (400) or when sessions are full (503)."""
        settings = services.settings
        admission = ExitStack()
        admission.enter_context(admitted(services.slots, services.keys.sessions, identity))
        call = _Call(new_id("rtc"), identity, peer, RTCPeerConnection(configuration(settings.webrtc_ice_servers)))
        try:
            _listen(call)
            sdp = announce(await _negotiate(call.pc, offer), settings.webrtc_public_address)
        except BaseException:
            await call.pc.close()
            admission.close()
            raise
        self._calls[call.call_id] = call
        call.task = asyncio.create_task(self._serve(call, protocol, services, admission), name="webrtc-call")
        log.info("answered WebRTC call %s from %s (key %s)", call.call_id, peer, identity.name)
        return Answer(call.call_id, sdp)

    def hangup(self, call_id: str, identity: Identity) -> bool:
        """End the call if it is the key's; False when there is no such call of this key."""
        call = self._calls.get(call_id)
        if call is None or call.identity.name != identity.name:
            return False
        call.hung_up = True
        call.gone.set()
        return True

    async def aclose(self) -> None:
        """End every call (at shutdown)."""
        await cancel_and_wait([c.task for c in self._calls.values() if c.task is not None])

    async def _serve(
        self, call: _Call, protocol: WireProtocol, services: RealtimeServices, admission: ExitStack
    ) -> None:
        started = time.monotonic()
        try:
            transport = await _connected(call, services.settings.webrtc_connect_timeout_s)
            if transport is None:
                return
            channel = transport.channel
            outcome = await run_session(transport, protocol, services)
            _report(call, outcome, transport, time.monotonic() - started)
            if outcome.error is not None and channel.readyState == "open":
                await _send_last(transport, channel, json.dumps(protocol.error(outcome.error)))
        finally:
            self._calls.pop(call.call_id, None)
            await call.pc.close()
            admission.close()


def _listen(call: _Call) -> None:
    """Take the `oai-events` channel and the first audio track as the peer brings them."""
    pc = call.pc

    @pc.on("datachannel")
    def on_datachannel(channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL or call.channel.done():
            channel.close()
            return
        channel.on("close", call.gone.set)
        # The track came with the offer, set before any channel opens.
        call.channel.set_result(CallTransport(channel, call.track, call.gone))

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio" and call.track is None:
            call.track = track
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is track:
                    without_prefetch(transceiver.receiver)

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            call.gone.set()


async def _negotiate(pc: RTCPeerConnection, offer: str) -> str:
    """The SDP answer to `offer`, its host candidates gathered."""
    if not offer.strip():
        raise invalid_offer("The request has no SDP offer.")
    if not offer.lstrip().startswith("v=") or "\nm=" not in offer:
        raise invalid_offer("The SDP offer could not be read: it needs a `v=` line and at least one `m=` section.")
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    except Exception as exc:  # aiortc's parser raises whatever a malformed line makes it raise
        raise invalid_offer(f"The SDP offer could not be read: {exc or type(exc).__name__}.") from None
    if pc.sctp is None:
        raise invalid_offer(
            f"The SDP offer has no data channel: create the `{EVENTS_CHANNEL}` data channel before the offer."
        )
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:
        raise invalid_offer(f"The SDP offer cannot be answered: {exc or type(exc).__name__}.") from None
    return pc.localDescription.sdp


async def _connected(call: _Call, timeout_s: float) -> CallTransport | None:
    """The transport of the call's open data channel, once ICE and DTLS are done; None (logged) when the peer does
    not get there in time or is gone first."""
    gone = asyncio.create_task(call.gone.wait())
    try:
        await asyncio.wait((call.channel, gone), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait([gone])
    if call.channel.done() and not call.gone.is_set():
        return call.channel.result()
    pc = call.pc
    why = "hung up" if call.hung_up else f"not connected within {timeout_s:g} s"
    end = "hangup" if call.hung_up else "not_connected"
    metrics.WEBRTC_CALLS.labels(end).inc()
    log.warning(
        "dropping WebRTC call %s from %s (key %s): %s (ICE %s, connection %s, data channel %s)",
        call.call_id,
        call.peer,
        call.identity.name,
        why,
        pc.iceConnectionState,
        pc.connectionState,
        "open" if call.channel.done() else "not opened",
    )
    return None


def _report(call: _Call, outcome: Outcome, transport: CallTransport, seconds: float) -> None:
    """One log line per call, saying why it ended; sheds counted as on the WebSocket."""
    end = "hangup" if call.hung_up else outcome.end.name.lower()
    metrics.WEBRTC_CALLS.labels(end).inc()
    why = "hung up" if call.hung_up else outcome.end.value
    if outcome.error is not None:
        why = f"{why}: {outcome.error.code}: {outcome.error.message}"
    line = "WebRTC call %s from %s (key %s) ended after %.1f s, %.1f s of audio heard (%.1f s filled in): %s"
    args = (call.call_id, call.peer, call.identity.name, seconds, transport.audio_seconds, transport.gap_seconds, why)
    if (shed := SHED.get(outcome.end)) is not None:
        metrics.REALTIME_SHED.labels(shed).inc()
        log.warning("shedding " + line, *args)
    elif outcome.end == End.CRASHED:
        log.error(line, *args, exc_info=outcome.exc)
    else:
        log.info(line, *args)


async def _send_last(transport: CallTransport, channel: RTCDataChannel, text: str) -> None:
    """Send the closing error and let it leave before the channel closes (closing the peer
    connection aborts what SCTP still holds); a peer that is gone or stuck is not waited for."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await transport.send_text(text)
            while channel.bufferedAmount and channel.readyState == "open":
                await asyncio.sleep(0.01)
    except Exception as exc:
        log.debug("sending a call's closing error failed: %r", exc)
    channel.close()
