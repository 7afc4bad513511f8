"""Pages on another origin (`CORS_ALLOW_ORIGINS`), as Debian's Chromium runs them: a page served by
another loopback server calls the edge's HTTP API with a key, reads its refusals, uploads a file,
and runs OpenAI's WebRTC flow with an ephemeral secret; pages of an origin not listed, and any
page when the setting is unset, are kept out by the browser.

Chromium's WebRTC offers every interface it has: like tests/test_webrtc_browser.py, these run only
in a network namespace whose one interface is loopback (`./serve.sh test` runs the suite in one).
"""

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from ui_helpers import (
    BROWSER_FLOW,
    mint_secret,
    page_opener,
    wait_for_events,
    wait_for_no_calls,
)
from webrtc_client import only_loopback

from server.core.settings import Settings
from tests.conftest import DATA, EdgeServer

KEY = "sk-cors-0123456789abcdefghijklmnop"

# A fetch from the page; a network error (what the browser gives for a response it keeps from the
# page) comes back as `error`.
FETCH = """
async ({ url, method, key, body }) => {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  try {
    const response = await fetch(url, { method: method || "GET", headers, body });
    return { status: response.status, body: await response.text() };
  } catch (error) {
    return { error: String(error) };
  }
}
"""

UPLOAD = """
async ({ url, key, audio }) => {
  const bytes = Uint8Array.from(atob(audio), (c) => c.charCodeAt(0));
  const form = new FormData();
  form.append("file", new Blob([bytes], { type: "audio/flac" }), "jfk.flac");
  form.append("model", "whisper-1");
  const response = await fetch(url, { method: "POST", headers: { Authorization: `Bearer ${key}` }, body: form });
  return { status: response.status, body: await response.json() };
}
"""


@pytest.fixture(scope="module")
def cors_edge(make_edge: Callable[..., EdgeServer], media_url: str) -> EdgeServer:
    """An edge with keys that lets pages of `media_url`'s origin in."""
    return make_edge(api_keys=f"app:{KEY}", cors_allow_origins=media_url, webrtc_host_addresses="127.0.0.1")


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    with page_opener(browser) as opener:
        yield opener


def fetch(page: Page, url: str, **options: Any) -> dict[str, Any]:
    return page.evaluate(FETCH, {"url": url, **options})


def test_a_page_of_a_listed_origin_calls_the_api_and_reads_its_refusals(
    open_page: Callable[..., Page], media_url: str, cors_edge: EdgeServer
) -> None:
    page = open_page(f"{media_url}/")
    listed = fetch(page, f"{cors_edge.url}/v1/models", key=KEY)  # Authorization: a preflight first
    assert listed["status"] == 200 and '"object":"list"' in listed["body"].replace(" ", "")
    refused = fetch(page, f"{cors_edge.url}/v1/models", key="sk-wrong-key-of-nobody-at-all-0000")
    assert refused["status"] == 401 and '"invalid_api_key"' in refused["body"]
    unkeyed = fetch(page, f"{cors_edge.url}/v1/audio/transcriptions", method="POST", body="x")
    assert unkeyed["status"] == 401
    uploaded = page.evaluate(
        UPLOAD,
        {
            "url": f"{cors_edge.url}/v1/audio/transcriptions",
            "key": KEY,
            "audio": base64.b64encode((DATA / "jfk.flac").read_bytes()).decode(),
        },
    )
    assert uploaded["status"] == 200 and isinstance(uploaded["body"]["text"], str), uploaded


def test_a_page_of_a_listed_origin_makes_a_webrtc_call(
    open_page: Callable[..., Page], media_url: str, cors_edge: EdgeServer
) -> None:
    page = open_page(f"{media_url}/")
    secret = mint_secret(cors_edge.url, KEY, {"type": "transcription"})
    answered = page.evaluate(BROWSER_FLOW, {"url": cors_edge.url, "secret": secret})
    assert answered["status"] == 201, answered
    only_loopback(answered["answer"])
    assert answered["location"].startswith("/v1/realtime/calls/rtc_")  # exposed to the page
    (created,) = wait_for_events(page, "session.created")
    assert created["session"]["type"] == "transcription"
    page.evaluate("() => window.__pc.close()")
    wait_for_no_calls(cors_edge)


def test_pages_of_other_origins_are_kept_out(
    open_page: Callable[..., Page], media_url: str, cors_edge: EdgeServer, edge: EdgeServer
) -> None:
    other_origin = media_url.replace("127.0.0.1", "localhost")  # another origin, the same server
    page = open_page(f"{other_origin}/")
    assert "error" in fetch(page, f"{cors_edge.url}/v1/models", key=KEY)
    assert "error" in fetch(page, f"{cors_edge.url}/v1/models")  # no preflight, no headers
    listed_page = open_page(f"{media_url}/")
    assert "error" in fetch(listed_page, f"{edge.url}/v1/models")  # the setting unset: no origin


@pytest.mark.parametrize(
    "origins", ["app.example.com", "https://app.example.com/path", "ftp://app.example.com", "https://?x"]
)
def test_an_entry_that_is_not_an_origin_stops_the_start(origins: str) -> None:
    with pytest.raises(ValueError, match="CORS_ALLOW_ORIGINS"):
        Settings(_env_file=None, cors_allow_origins=origins)  # type: ignore[call-arg]


def test_origins_are_read_as_a_list() -> None:
    settings = Settings(_env_file=None, cors_allow_origins=" https://a.example , http://127.0.0.1:8080/,")  # type: ignore[call-arg]
    assert settings.cors_origin_list == ["https://a.example", "http://127.0.0.1:8080"]
    assert Settings(_env_file=None, cors_allow_origins="*").cors_origin_list == ["*"]  # type: ignore[call-arg]
