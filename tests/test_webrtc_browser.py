"""OpenAI's documented browser flow for WebRTC, run by Debian's Chromium against a real edge and the
session's real vLLM: the page takes the (fake) microphone, opens the `oai-events` channel, posts
its SDP offer to `/v1/realtime/calls` with an ephemeral `ek_` secret, and sets the answer; events
then travel on the channel both ways. A transcription session gets a completed item per utterance;
a conversation session gets a text reply to a spoken turn.

Chromium offers every interface it has. These tests therefore run only in a network namespace
whose one interface is loopback (`./serve.sh test` runs the suite in one), so that no ICE check
can go to any other address: they fail, rather than send, anywhere else.
"""

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from ui_helpers import (
    BROWSER_FLOW,
    events,
    mint_secret,
    page_opener,
    wait_for_events,
    wait_for_no_calls,
)
from webrtc_client import only_loopback

from tests.conftest import SERVED_NAME, EdgeServer

KEY = "sk-browser-0123456789abcdefghijklmn"
COMPLETED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture(scope="module")
def rtc_edge(make_edge: Callable[..., EdgeServer]) -> EdgeServer:
    return make_edge(api_keys=f"browser:{KEY}", webrtc_host_addresses="127.0.0.1")


@pytest.fixture
def page(browser: Browser, rtc_edge: EdgeServer) -> Iterator[Page]:
    with page_opener(browser) as open_page:
        yield open_page(f"{rtc_edge.url}/")  # the edge's own origin, as its UI calls it


def mint(edge: EdgeServer, session: dict[str, Any]) -> str:
    return mint_secret(edge.url, KEY, session)


def call(page: Page, edge: EdgeServer, secret: str) -> str:
    """Run the browser flow; the call's id."""
    answered = page.evaluate(BROWSER_FLOW, {"url": edge.url, "secret": secret})
    assert answered["status"] == 201, answered
    only_loopback(answered["answer"])
    return answered["location"].rsplit("/", 1)[1]


def test_chromium_transcribes_its_microphone_over_webrtc(page: Page, rtc_edge: EdgeServer) -> None:
    secret = mint(rtc_edge, {"type": "transcription", "audio": {"input": {"transcription": {"language": "en"}}}})
    call_id = call(page, rtc_edge, secret)
    (created,) = wait_for_events(page, "session.created")
    assert created["session"]["type"] == "transcription"
    assert created["session"]["audio"]["input"]["transcription"]["language"] == "en"  # the secret's session
    # Client events travel on the channel too.
    page.evaluate(
        """() => window.__channel.send(JSON.stringify({type: "session.update", session: {type: "transcription",
             audio: {input: {turn_detection: {type: "server_vad", silence_duration_ms: 400}}}}}))"""
    )
    (updated,) = wait_for_events(page, "session.updated")
    assert updated["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 400
    # The fake microphone's three utterances: three turns, each with its transcript.
    completed = wait_for_events(page, COMPLETED, 3, timeout_s=90)
    assert all(item["transcript"] for item in completed[:3])
    starts = [e["audio_start_ms"] for e in events(page, "input_audio_buffer.speech_started")]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert len(rtc_edge.app.state.services.calls) == 1 and call_id.startswith("rtc_")
    page.evaluate("() => window.__pc.close()")  # the browser hangs up: the call ends at once
    wait_for_no_calls(rtc_edge)


def test_chromium_gets_a_text_reply_in_a_conversation_session(page: Page, rtc_edge: EdgeServer) -> None:
    secret = mint(
        rtc_edge,
        {
            "type": "realtime",
            "model": SERVED_NAME,
            "output_modalities": ["text"],
            "instructions": "Answer briefly.",
            "max_output_tokens": 8,
        },
    )
    call(page, rtc_edge, secret)
    (created,) = wait_for_events(page, "session.created")
    assert created["session"]["type"] == "realtime"
    (done, *_) = wait_for_events(page, "response.done", timeout_s=90)
    # Random weights never stop by themselves: the reply ends at its token cap.
    assert done["response"]["status_details"]["reason"] == "max_output_tokens", done
    (message,) = [item for item in done["response"]["output"] if item["type"] == "message"]
    text = "".join(part.get("text", "") for part in message["content"])
    deltas = "".join(
        e["delta"] for e in events(page, "response.output_text.delta") if e["response_id"] == done["response"]["id"]
    )
    assert text and text == deltas
    page.close()  # the tab goes away without hanging up: the peer connection dies with it
    wait_for_no_calls(rtc_edge, timeout_s=60)


def test_a_wrong_secret_is_refused_in_the_browser(page: Page, rtc_edge: EdgeServer) -> None:
    answered = page.evaluate(BROWSER_FLOW, {"url": rtc_edge.url, "secret": "ek_not-a-secret-of-this-edge"})
    assert answered["status"] == 401 and '"invalid_api_key"' in answered["answer"]
    assert not len(rtc_edge.app.state.services.calls)


def test_the_tests_cannot_reach_other_addresses() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, pytest.raises(OSError):
        probe.sendto(b"x", ("192.0.2.2", 9))
