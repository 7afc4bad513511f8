"""WebRTC calls at `/v1/realtime/calls` against a real edge and the session's real vLLM: an aiortc
peer (a browser's flow: microphone track, `oai-events` channel) posts its offer, gets the answer,
and transcribes speech over the data channel; the unified interface through the `openai` SDK;
hangup; bad offers, refused secrets, and a peer that never connects. Every ICE candidate stays on
127.0.0.1 (`webrtc_client.only_loopback` checks each offer and answer before it is used)."""

import asyncio
import re
import time
from collections.abc import Callable

import httpx
import openai
import psutil
import pytest
from realtime_helpers import JFK_1, JFK_2, TOLERANCE_MS, TRANSCRIPTION, build_recording
from webrtc_client import Peer

from server.realtime.webrtc import media
from tests.conftest import EdgeServer, metric_sum

KEY = "sk-caller-0123456789abcdefghijklmn"
OTHER_KEY = "sk-other-0123456789abcdefghijklmn"


@pytest.fixture(scope="module")
def rtc_edge(make_edge: Callable[..., EdgeServer]) -> EdgeServer:
    return make_edge(
        api_keys=f"caller:{KEY},other:{OTHER_KEY}", webrtc_host_addresses="127.0.0.1", webrtc_connect_timeout_s=2
    )


async def metrics_text(edge: EdgeServer) -> str:
    async with httpx.AsyncClient(base_url=edge.url) as client:
        return (await client.get("/metrics")).text


async def sessions_open(edge: EdgeServer) -> float:
    lines = (await metrics_text(edge)).splitlines()
    return sum(float(line.split()[1]) for line in lines if line.startswith("edge_realtime_sessions "))


async def wait_for_no_calls(edge: EdgeServer, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while len(edge.app.state.services.calls) or await sessions_open(edge):
        assert time.monotonic() < deadline, "a call was not freed"
        await asyncio.sleep(0.1)


def udp_sockets() -> int:
    """UDP sockets of this process (the edge and the test's peers both run in it)."""
    return len(psutil.Process().net_connections(kind="udp"))


async def wait_for_udp_sockets(at_most: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while udp_sockets() > at_most:
        assert time.monotonic() < deadline, f"UDP sockets left open: {udp_sockets()} > {at_most}"
        await asyncio.sleep(0.1)


async def post_offer(edge: EdgeServer, offer: str, key: str = KEY, path: str = "/v1/realtime/calls") -> httpx.Response:
    headers = {"content-type": "application/sdp"} | ({"authorization": f"Bearer {key}"} if key else {})
    async with httpx.AsyncClient(base_url=edge.url) as client:
        return await client.post(path, content=offer, headers=headers)


async def test_a_call_transcribes_the_microphone_on_the_rtp_clock(rtc_edge: EdgeServer) -> None:
    sockets_before = udp_sockets()
    recording = build_recording([JFK_1, JFK_2])
    peer = Peer(recording.audio)
    try:
        answered = await post_offer(rtc_edge, await peer.offer())
        assert answered.status_code == 201, answered.text
        assert answered.headers["content-type"].startswith("application/sdp")
        call_id = answered.headers["location"].rsplit("/", 1)[1]
        assert answered.headers["location"] == f"/v1/realtime/calls/{call_id}" and call_id.startswith("rtc_")
        await peer.connect(answered.text)
        assert (await peer.next_event())["type"] == "session.created"
        # The edge decodes each packet as soon as it is in order (aiortc would hold four first).
        (receiver,) = [t.receiver for t in rtc_edge.app.state.services.calls._calls[call_id].pc.getTransceivers()]
        assert getattr(receiver, media._JITTER_BUFFER)._prefetch == 0
        starts = []
        for _ in recording.truth_ms:
            starts.append((await peer.until("input_audio_buffer.speech_started"))["audio_start_ms"])
            completed = await peer.until(f"{TRANSCRIPTION}.completed")
            assert completed["transcript"]
        for got, (truth, _) in zip(starts, recording.truth_ms, strict=True):
            assert abs(got - truth) <= TOLERANCE_MS, (starts, recording.truth_ms)
        async with httpx.AsyncClient(base_url=rtc_edge.url) as client:
            hung_up = await client.post(
                f"/v1/realtime/calls/{call_id}/hangup", headers={"authorization": f"Bearer {KEY}"}
            )
        assert hung_up.status_code == 200
        await asyncio.wait_for(peer.closed.wait(), 10)
        assert udp_sockets() > sockets_before  # the call's own (both sides')
    finally:
        await peer.close()
    await wait_for_no_calls(rtc_edge)
    await wait_for_udp_sockets(sockets_before)  # every ICE socket of the call closed with it


async def test_the_unified_interface_through_the_sdk(rtc_edge: EdgeServer) -> None:
    client = openai.AsyncOpenAI(api_key=KEY, base_url=f"{rtc_edge.url}/v1", max_retries=0)
    session = {"type": "transcription", "audio": {"input": {"turn_detection": {"silence_duration_ms": 300}}}}
    peer = Peer(build_recording([JFK_1]).audio)
    try:
        answer = await client.realtime.calls.create(sdp=await peer.offer(), session=session)  # type: ignore[arg-type]
        await peer.connect(answer.text)
        created = await peer.next_event()
        assert created["type"] == "session.created"
        assert created["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 300
        await peer.until(f"{TRANSCRIPTION}.completed")
        calls = rtc_edge.app.state.services.calls
        (call_id,) = list(calls._calls)
        with pytest.raises(openai.NotFoundError):  # another key's call
            other = openai.AsyncOpenAI(api_key=OTHER_KEY, base_url=f"{rtc_edge.url}/v1", max_retries=0)
            await other.realtime.calls.hangup(call_id)
        await client.realtime.calls.hangup(call_id)
        await asyncio.wait_for(peer.closed.wait(), 10)
    finally:
        await peer.close()
    await wait_for_no_calls(rtc_edge)
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.hangup(call_id)


async def test_an_ephemeral_secret_opens_its_session_over_webrtc(rtc_edge: EdgeServer) -> None:
    async with httpx.AsyncClient(base_url=rtc_edge.url, headers={"authorization": f"Bearer {KEY}"}) as client:
        minted = await client.post(
            "/v1/realtime/client_secrets",
            json={"session": {"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcmu"}}}}},
        )
    secret = minted.json()["value"]
    peer = Peer()
    try:
        answered = await post_offer(rtc_edge, await peer.offer(), key=secret)
        assert answered.status_code == 201, answered.text
        await peer.connect(answered.text)
        created = await peer.next_event()
        assert created["session"]["id"] == minted.json()["session"]["id"]
        peer.send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {"format": 7}}}})
        error = await peer.until("error")
        assert error["error"]["param"].startswith("session.audio.input.format")
    finally:
        await peer.close()
    await wait_for_no_calls(rtc_edge)  # the peer closed: the call ends at once, its slot freed


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        ("not an sdp", "application/sdp", 400, "could not be read"),
        ("", "application/sdp", 400, "no SDP offer"),
        ("v=0", "text/plain", 415, "application/sdp"),
    ],
)
async def test_bad_offers_get_openai_errors(
    rtc_edge: EdgeServer, body: str, content_type: str, status: int, says: str
) -> None:
    async with httpx.AsyncClient(base_url=rtc_edge.url) as client:
        answer = await client.post(
            "/v1/realtime/calls", content=body, headers={"content-type": content_type, "authorization": f"Bearer {KEY}"}
        )
    assert answer.status_code == status
    assert says in answer.json()["error"]["message"]
    await wait_for_no_calls(rtc_edge)


async def test_an_offer_without_a_codec_the_edge_decodes_is_refused(rtc_edge: EdgeServer) -> None:
    peer = Peer(build_recording([JFK_1]).audio)
    try:
        offer = await peer.offer()
    finally:
        await peer.close()
    unknown = re.sub(r"a=rtpmap:(\d+) (opus|PCMU|PCMA|G722)/", r"a=rtpmap:\1 x-unknown/", offer)
    assert "opus/" not in unknown
    answer = await post_offer(rtc_edge, unknown)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_offer" and "audio" in answer.json()["error"]["message"]
    await wait_for_no_calls(rtc_edge)


async def test_an_offer_without_the_events_channel_is_refused(rtc_edge: EdgeServer) -> None:
    peer = Peer(build_recording([JFK_1]).audio, channel=False)
    try:
        answer = await post_offer(rtc_edge, await peer.offer())
    finally:
        await peer.close()
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_offer" and "oai-events" in answer.json()["error"]["message"]
    await wait_for_no_calls(rtc_edge)


@pytest.mark.parametrize("key", ["ek_not-a-real-secret", "sk-wrong-0123456789abcdefghijkl", ""])
async def test_refused_keys_get_401_and_no_call(rtc_edge: EdgeServer, key: str) -> None:
    peer = Peer()
    try:
        answer = await post_offer(rtc_edge, await peer.offer(), key=key)
    finally:
        await peer.close()
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"
    if key.startswith("ek_"):
        assert "invalid or expired" in answer.json()["error"]["message"]
    await wait_for_no_calls(rtc_edge)


async def test_a_peer_that_never_connects_is_dropped_and_freed(rtc_edge: EdgeServer) -> None:
    before = metric_sum(await metrics_text(rtc_edge), "edge_webrtc_calls_total", 'end="not_connected"')
    sockets_before = udp_sockets()
    peer = Peer()
    try:
        answered = await post_offer(rtc_edge, await peer.offer())
        assert answered.status_code == 201
        assert await sessions_open(rtc_edge) == 1  # the call holds its slot while it may still connect
        await wait_for_no_calls(rtc_edge, timeout_s=10)  # never given the answer: dropped after 2 s
    finally:
        await peer.close()
    after = metric_sum(await metrics_text(rtc_edge), "edge_webrtc_calls_total", 'end="not_connected"')
    assert after == before + 1
    await wait_for_udp_sockets(sockets_before)
