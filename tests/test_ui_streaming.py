"""The browser UI's live mode on the streaming engine, in Debian's Chromium with the fake microphone
(the recording of `ui_helpers`), against an edge whose live sessions go to the real vLLM serving
the tiny Voxtral Realtime model: the text of the turn in progress grows with its deltas."""

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect
from ui_helpers import ARTIFACTS, UTTERANCES_S, events, page_opener

from tests.conftest import EdgeServer

DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"

# Every text the turn in progress showed, with the turn's state at that moment.
STATE_RECORDER_SCRIPT = """
window.__shown = [];
new MutationObserver(() => {
  for (const p of document.querySelectorAll(".turn-text.provisional")) {
    const turn = p.closest(".turn");
    if (p.textContent && p.textContent !== "Listening")
      window.__shown.push({ item: turn.dataset.itemId, state: turn.dataset.state, text: p.textContent });
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


@pytest.fixture
def page(browser: Browser, make_edge: Callable[..., EdgeServer], realtime_vllm_url: str) -> Iterator[Page]:
    edge = make_edge(realtime_vllm_url=realtime_vllm_url, realtime_engine="stream")
    with page_opener(browser, STATE_RECORDER_SCRIPT) as open_:
        yield open_(edge.url)


def test_live_shows_the_streaming_text_while_the_person_speaks(page: Page) -> None:
    page.get_by_role("button", name="Start").click()
    finals = page.locator('.turn[data-state="final"]')
    expect(finals).to_have_count(len(UTTERANCES_S), timeout=120_000)

    completed = events(page, COMPLETED)
    assert [e["item_id"] for e in completed] == [
        e["item_id"] for e in events(page, "input_audio_buffer.speech_started")
    ]
    # Partial transcripts are on in the UI by default; streaming sessions need none (the deltas are the text).
    expect(page.locator("#partials")).to_be_checked()
    assert not events(page, "conversation.item.input_audio_transcription.partial")
    shown = page.evaluate("window.__shown")
    for event in completed:
        streamed = "".join(e["delta"] for e in events(page, DELTA) if e["item_id"] == event["item_id"])
        assert streamed == event["transcript"] and streamed
        texts = [s for s in shown if s["item"] == event["item_id"]]
        # The item in progress showed its text growing delta by delta before it was final. (That
        # deltas come before the speaker stops is tested with the SDK, where the audio is held back;
        # here the microphone runs in real time and the timing would depend on the machine.)
        assert texts and all(event["transcript"].startswith(s["text"]) for s in texts)
        assert {s["state"] for s in texts} <= {"speaking", "transcribing"}
        assert len({s["text"] for s in texts}) > 1
    assert finals.locator(".turn-text.final").all_inner_texts() == [e["transcript"].strip() for e in completed]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-streaming.png"), full_page=True)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#connection")).to_have_text("Not connected")
