"""The browser UI in front of an edge that requires API keys, in Chromium: the key prompt (wrong
key → a message, right key → live turns and file transcription), forgetting the key, and an
ephemeral secret used from the browser through the `openai-insecure-api-key.` subprotocol.
"""

import time
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, expect
from test_ui import artifacts, browser, events, open_page, shot, utterances  # noqa: F401  (fixtures)

from tests.conftest import DATA, EdgeServer

KEY = "sk-ui-0123456789abcdefghijklmnop"
COMPLETED = "conversation.item.input_audio_transcription.completed"
STORAGE = "voxtral.apiKey"


@pytest.fixture(scope="module")
def keyed(make_edge: Callable[..., EdgeServer]) -> EdgeServer:
    return make_edge(api_keys=f"ui:{KEY}")


def stored_key(page: Page) -> str | None:
    return page.evaluate(f"localStorage.getItem({STORAGE!r})")


def test_prompt_refuses_a_wrong_key_then_live_turns_with_the_right_one(
    open_page: Callable[..., Page],  # noqa: F811
    keyed: EdgeServer,
    utterances: tuple,  # noqa: F811
) -> None:
    _, count = utterances
    page = open_page(keyed.url)
    prompt = page.locator("#api-key")
    expect(prompt).to_be_visible()
    expect(page.get_by_label("API key")).to_be_focused()
    shot(page, "api-key-prompt")

    page.get_by_label("API key").fill("sk-wrong-key-000000000000000")
    page.get_by_role("button", name="Use key").click()
    expect(page.locator("#api-key-message")).to_contain_text("This key was refused.")
    expect(prompt).to_be_visible()
    assert stored_key(page) is None
    shot(page, "api-key-refused")

    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Use key").click()
    expect(prompt).to_be_hidden()
    expect(page.get_by_role("button", name="API key")).to_be_visible()
    assert stored_key(page) == KEY

    page.get_by_role("button", name="Start").click()
    expect(page.locator("#connection")).to_have_text("Live", timeout=30_000)
    finals = page.locator('.turn[data-state="final"]')
    expect(finals).to_have_count(count, timeout=120_000)
    assert len(events(page, COMPLETED)) == count
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#connection")).to_have_text("Not connected")

    # File mode sends the key too.
    page.get_by_role("tab", name="File").click()
    page.get_by_label("Choose an audio or video file").set_input_files(DATA / "jfk.flac")
    with page.expect_response("**/v1/audio/transcriptions") as response:
        page.get_by_role("button", name="Transcribe").click()
    assert response.value.status == 200
    assert response.value.request.headers["authorization"] == f"Bearer {KEY}"
    expect(page.locator("#segments li").first).to_be_visible()


def test_saved_key_is_remembered_refused_when_wrong_and_can_be_forgotten(
    open_page: Callable[..., Page],  # noqa: F811
    keyed: EdgeServer,
) -> None:
    page = open_page(keyed.url)
    page.evaluate(f"localStorage.setItem({STORAGE!r}, {KEY!r})")
    page.reload()
    expect(page.get_by_role("button", name="API key")).to_be_visible()
    expect(page.locator("#api-key")).to_be_hidden()

    page.get_by_role("button", name="API key").click()
    page.get_by_role("button", name="Forget key").click()
    expect(page.locator("#api-key-message")).to_contain_text("Key forgotten.")
    assert stored_key(page) is None

    # A saved key the server no longer takes: the page says so at load, and Start says so too.
    page.evaluate(f"localStorage.setItem({STORAGE!r}, 'sk-revoked-0000000000000000')")
    page.reload()
    expect(page.locator("#api-key-message")).to_contain_text("The server refused the saved API key.")
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#live-message")).to_contain_text("The server refused the API key.", timeout=30_000)
    expect(page.get_by_role("button", name="Start")).to_have_attribute("aria-pressed", "false")

    page.get_by_role("tab", name="File").click()
    page.get_by_label("Choose an audio or video file").set_input_files(DATA / "jfk.flac")
    page.get_by_role("button", name="Transcribe").click()
    expect(page.locator("#file-message")).to_contain_text("The server needs a valid API key.")


def test_open_server_shows_no_prompt(open_page: Callable[..., Page], edge: EdgeServer) -> None:  # noqa: F811
    page = open_page(edge.url)
    expect(page.get_by_role("button", name="Start")).to_be_visible()
    page.wait_for_load_state("networkidle")
    expect(page.locator("#api-key")).to_be_hidden()
    expect(page.get_by_role("button", name="API key")).to_be_hidden()


OPEN_SOCKET = """async ([url, secret]) => {
  const socket = new WebSocket(url, ["realtime", "openai-insecure-api-key." + secret]);
  return await new Promise((resolve) => {
    socket.onmessage = (m) => { resolve({protocol: socket.protocol, first: JSON.parse(m.data)}); socket.close(); };
    socket.onclose = (e) => resolve({closed: e.code});
  });
}"""


def test_ephemeral_secret_from_the_browser(open_page: Callable[..., Page], keyed: EdgeServer) -> None:  # noqa: F811
    """A backend mints the secret with the real key; the browser only ever sees the `ek_` secret."""
    minted = httpx.post(
        f"{keyed.url}/v1/realtime/client_secrets",
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "expires_after": {"anchor": "created_at", "seconds": 10},
            "session": {"type": "transcription", "audio": {"input": {"transcription": {"language": "de"}}}},
        },
    ).json()
    page = open_page(keyed.url)
    url = keyed.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    opened = page.evaluate(OPEN_SOCKET, [url, minted["value"]])
    assert opened["protocol"] == "realtime"
    assert opened["first"]["type"] == "session.created"
    assert opened["first"]["session"]["audio"]["input"]["transcription"]["language"] == "de"

    refused_http = page.evaluate(
        "async ([s]) => (await fetch('/v1/models', {headers: {Authorization: 'Bearer ' + s}})).status",
        [minted["value"]],
    )
    assert refused_http == 401
    tampered = minted["value"][:-4] + ("AAAA" if not minted["value"].endswith("AAAA") else "BBBB")
    assert page.evaluate(OPEN_SOCKET, [url, tampered]) == {"closed": 1006}

    time.sleep(max(0.0, minted["expires_at"] + 1 - time.time()))
    assert page.evaluate(OPEN_SOCKET, [url, minted["value"]]) == {"closed": 1006}
