"""Live partial transcripts (an extension of the realtime protocol), and a conversation
session's reply cut short by new speech."""

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from realtime_helpers import (
    JFK_1,
    JFK_2,
    TRANSCRIPTION,
    VAD,
    build_recording,
    collect,
    count,
    of_type,
    openai_client,
    pcm16,
    send_paced,
    wait_until,
)

from tests.conftest import SERVED_NAME, EdgeServer, vllm_requests_running


def session(**extra: object) -> dict:
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 16000},
                "turn_detection": VAD,
                **extra.pop("audio_input", {}),
            }
        },
        **extra,
    }


async def test_partials_update_the_turn_in_progress(edge: EdgeServer) -> None:
    recording = build_recording([JFK_1])
    async with openai_client(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        await conn.session.update(session=session(audio_input={"transcription": {"partial_interval_ms": 300}}))
        await conn.recv()
        await send_paced(
            lambda audio: conn.input_audio_buffer.append(audio=audio), pcm16(recording.audio), 32000, real_time=True
        )
        events = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 1))
        await asyncio.sleep(1)
        await conn.input_audio_buffer.clear()
        events += await collect(conn.recv_bytes, count("input_audio_buffer.cleared", 1))
    kinds = [e["type"] for e in events]
    item_id = events[0]["item_id"]
    partials = of_type(events, f"{TRANSCRIPTION}.partial")
    assert partials, kinds
    assert all(
        p["item_id"] == item_id and p["content_index"] == 0 and isinstance(p["transcript"], str) and p["event_id"]
        for p in partials
    )
    first, last = (
        kinds.index(f"{TRANSCRIPTION}.partial"),
        len(kinds) - 1 - kinds[::-1].index(f"{TRANSCRIPTION}.partial"),
    )
    assert kinds.index("input_audio_buffer.speech_started") < first
    assert last < kinds.index("input_audio_buffer.speech_stopped")


class EventReader:
    """Reads every server event in the background from the moment it starts, so the client never
    stops reading: a client that sends without reading would push back on the server's stream of
    reply deltas, which is not what these tests are about. Waiting costs O(1) per event (a count
    per type), not a scan of all events: a reply of thousands of deltas scanned at each one would
    starve the edge, which runs in this process, and the client's own keepalive pongs."""

    def __init__(self, recv: Callable[[], Awaitable[bytes]]) -> None:
        self.events: list[dict] = []
        self.seen: Counter[str] = Counter()
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._run(recv))

    async def _run(self, recv: Callable[[], Awaitable[bytes]]) -> None:
        try:
            while True:
                event = json.loads(await recv())
                self.events.append(event)
                self.seen[event["type"]] += 1
                self._arrived.set()
        finally:
            self._arrived.set()  # a waiter sees the failure at once

    async def wait_for(self, *kinds: str, timeout: float = 60) -> list[dict]:
        """All events so far, once an event of one of `kinds` has arrived."""
        async with asyncio.timeout(timeout):
            while not any(self.seen[kind] for kind in kinds):
                if self._task.done():
                    self._task.result()  # the connection failed: raise its error
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.events)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_new_speech_cancels_the_reply_in_progress(make_edge: Callable[..., EdgeServer], vllm_url: str) -> None:
    """The user speaking again cuts a reply short while vLLM is streaming it, and its vLLM
    request is aborted while the session stays open.

    The interruption is sent once the reply's first delta has arrived (and no `response.done`),
    so the abort is of a real request in flight; the reply may run to 4096 tokens, so it outlasts
    the seconds-long stalls of a busy 2-core box (vLLM's own `/metrics` can take as long as a whole
    reply to answer there, so it is not polled before the interruption). A random-weight model may
    end its reply on its own before the interruption is heard; such a session proves nothing, so a
    fresh one (with a prompt of its own, hence another greedy path) is tried, a bounded number of times.

    Neither side pings, and the lag bound is wide: while vLLM streams on this 2-core box, the whole
    test process (edge and client) can stall for over 20 s, and keepalive (20 s by default) or the
    lag bound (10 s) then ends the session before the interruption is even read (seen in
    fresh-clone runs: close 1011, keepalive ping timeout; close 1013, session lagging).
    """
    edge = make_edge(realtime_ping_timeout_s=600, realtime_ping_interval_s=600, realtime_max_lag_s=600)
    second = build_recording([JFK_2], gap_s=0)
    onset = second.truth_ms[0][0] * 16
    interruption = pcm16(second.audio[onset : onset + 16000])
    first_turn = pcm16(build_recording([JFK_1]).audio)
    for attempt in range(5):
        async with openai_client(edge).realtime.connect(
            model=SERVED_NAME,
            websocket_connection_options={"ping_interval": None},  # type: ignore[typeddict-unknown-key]
        ) as conn:
            reader = EventReader(conn.recv_bytes)
            try:
                await reader.wait_for("session.created")
                await conn.session.update(
                    session=session(
                        type="realtime",
                        output_modalities=["text"],
                        max_output_tokens=4096,
                        instructions=f"Answer at length ({attempt}).",
                    )
                )
                await send_paced(lambda audio: conn.input_audio_buffer.append(audio=audio), first_turn, 32000)
                events = await reader.wait_for("response.output_text.delta", "response.done")
                if of_type(events, "response.done"):
                    continue  # the reply ended before it could be interrupted
                await send_paced(lambda audio: conn.input_audio_buffer.append(audio=audio), interruption, 32000)
                events = await reader.wait_for("response.done", timeout=180)
                created, done = of_type(events, "response.created")[0], of_type(events, "response.done")[0]
                assert done["response"]["id"] == created["response"]["id"]
                if done["response"]["status"] == "completed":
                    continue
                kinds = [e["type"] for e in events]
                assert done["response"]["status"] == "cancelled", done["response"]
                assert done["response"]["status_details"]["reason"] == "turn_detected"
                assert kinds.index("input_audio_buffer.speech_started", kinds.index("response.created")) < kinds.index(
                    "response.done"
                )
                # Aborted while the session is still open: the cancellation did it, not a disconnect.
                await wait_until(lambda: vllm_requests_running(vllm_url) == 0)
                return
            finally:
                await reader.stop()
    pytest.fail("in 5 sessions the model always finished its reply before the user spoke again")
