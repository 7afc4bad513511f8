"""Push-to-talk in the browser UI, in Debian's Chromium with the fake microphone (the recording of
`ui_helpers`), against a real edge and the session's vLLM: each press is one turn, transcribed on
release, with turn detection off."""

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect
from ui_helpers import ARTIFACTS, events, page_opener

COMPLETED = "conversation.item.input_audio_transcription.completed"
HOLD_MS = 2500


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    with page_opener(browser) as open_:
        yield open_


def test_push_to_talk_gives_one_turn_per_press(open_page, edge) -> None:
    page = open_page(edge.url)
    talk = page.get_by_role("button", name="Hold to talk")
    finals = page.locator('.turn[data-state="final"]')

    # Held with the mouse: the press starts the microphone and the session.
    talk.hover()
    page.mouse.down()
    expect(talk).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#speaking")).to_contain_text("Talking")
    expect(page.locator("#connection")).to_have_text("Live", timeout=30_000)
    page.wait_for_timeout(HOLD_MS)
    page.screenshot(path=str(ARTIFACTS / "push-to-talk-held.png"))
    page.mouse.up()
    expect(talk).to_have_attribute("aria-pressed", "false")
    expect(finals).to_have_count(1, timeout=120_000)

    # Held with the space bar.
    page.locator("body").focus()
    page.keyboard.down("Space")
    expect(talk).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(HOLD_MS)
    page.keyboard.up("Space")
    expect(finals).to_have_count(2, timeout=120_000)

    # A tap too short for a word is dropped, not sent as a turn.
    page.keyboard.press("Space")
    page.wait_for_timeout(1500)

    session = events(page, "session.updated")[-1]["session"]
    assert session["audio"]["input"]["turn_detection"] is None
    assert len(events(page, "input_audio_buffer.committed")) == 2
    assert not events(page, "input_audio_buffer.speech_started"), "turn detection is off"
    assert not events(page, "error")
    completed = events(page, COMPLETED)
    assert len(completed) == 2
    assert finals.locator(".turn-text.final, .turn-text.empty-text").all_inner_texts() == [
        e["transcript"].strip() or "(nothing recognised)" for e in completed
    ]
    expect(page.locator(".turn")).to_have_count(2)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "push-to-talk.png"), full_page=True)

    # Stop ends the session; hands-free Start is a session with turn detection again.
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#connection")).to_have_text("Not connected")
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#connection")).to_have_text("Live", timeout=30_000)
    expect(talk).to_be_disabled()
    assert events(page, "session.updated")[-1]["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    page.get_by_role("button", name="Stop").click()
    expect(talk).to_be_enabled()


def test_push_to_talk_by_touch(open_page, edge) -> None:
    """A finger held on the button (a real touch, through Chromium's input pipeline)."""
    page = open_page(edge.url, viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    box = page.locator("#ptt").bounding_box()
    assert box is not None
    finger = {"x": box["x"] + box["width"] / 2, "y": box["y"] + box["height"] / 2}
    touch = page.context.new_cdp_session(page)
    touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [finger]})
    expect(page.locator("#ptt")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#connection")).to_have_text("Live", timeout=30_000)
    page.wait_for_timeout(HOLD_MS)
    touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    expect(page.locator('.turn[data-state="final"]')).to_have_count(1, timeout=120_000)
    assert len(events(page, "input_audio_buffer.committed")) == 1
    page.screenshot(path=str(ARTIFACTS / "push-to-talk-phone.png"), full_page=True)
