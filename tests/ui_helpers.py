"""Helpers for the browser UI tests: the fake microphone recording and Chromium's launch options."""

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from vad_helpers import silence

from server.core.audio import SAMPLE_RATE, decode_audio, encode_wav
from vad.streaming import SpeechStarted, SpeechStopped, StreamingDetector, StreamParams

DATA = Path(__file__).parent / "data"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"

# Three utterances of jfk.flac, cut in its pauses (seconds): each is one turn with server VAD.
UTTERANCES_S = [(0.0, 2.5), (3.0, 4.7), (7.9, 11.0)]
LEAD_SILENCE_S = 3.0  # covers microphone and connection start-up: audio before that is not sent
GAP_S = 2.0
TRAIL_SILENCE_S = 60.0  # Chromium loops the file; no second pass within a test


def fake_speech_wav(path: Path) -> int:
    """Write the fake microphone's recording to `path`; returns the number of utterances in it."""
    speech = decode_audio(DATA / "jfk.flac", max_duration_s=60)
    parts = [silence(LEAD_SILENCE_S)]
    for i, (start, end) in enumerate(UTTERANCES_S):
        if i:
            parts.append(silence(GAP_S))
        parts.append(speech[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)])
    parts.append(silence(TRAIL_SILENCE_S))
    audio = np.concatenate(parts)
    path.write_bytes(encode_wav(audio))
    return len(UTTERANCES_S)


def vad_turns(path: Path) -> int:
    """Turns the server's VAD (default parameters) finds in a recording."""
    detector = StreamingDetector(StreamParams())
    audio = decode_audio(path, max_duration_s=600)
    events = detector.feed(audio) + detector.flush()
    starts = sum(isinstance(e, SpeechStarted) for e in events)
    stops = sum(isinstance(e, SpeechStopped) for e in events)
    assert starts == stops
    return starts


# Loopback candidates are hidden from pages unless asked for; mDNS names would hide the address.
WEBRTC_ARGS = ("--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns")


def assert_loopback_only() -> None:
    """Chromium offers ICE candidates on every interface it has: its WebRTC tests run only where
    loopback is the one interface (`./serve.sh test` runs the suite in such a network namespace)."""
    names = [name for _, name in socket.if_nameindex()]
    assert names == ["lo"], (
        f"the WebRTC browser tests need a network namespace with only loopback (interfaces: {names}); "
        "run them through ./serve.sh test"
    )


def chromium_args(fake_audio: Path) -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_audio}",
        *WEBRTC_ARGS,
    ]


# Installed before the page's scripts: keeps every realtime server event the page receives, and
# every provisional text the transcript showed, for the tests to compare with what is on screen.
RECORDER_SCRIPT = """
window.__events = [];
window.__provisional = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (m) => window.__events.push(JSON.parse(m.data)));
  }
};
const nativeCreateDataChannel = RTCPeerConnection.prototype.createDataChannel;
RTCPeerConnection.prototype.createDataChannel = function (...args) {
  const channel = nativeCreateDataChannel.apply(this, args);
  channel.addEventListener("message", (m) => window.__events.push(JSON.parse(m.data)));
  return channel;
};
new MutationObserver(() => {
  for (const p of document.querySelectorAll(".turn-text.provisional")) {
    if (p.textContent && p.textContent !== "Listening") window.__provisional.push(p.textContent);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""

# OpenAI's browser example, as documented: offer posted as soon as it is set (no waiting for ICE
# gathering), the answer set from the response body. What the channel receives, ui_helpers.RECORDER_SCRIPT keeps.
BROWSER_FLOW = """
async ({ url, secret }) => {
  const pc = (window.__pc = new RTCPeerConnection());
  const microphone = await navigator.mediaDevices.getUserMedia({ audio: true });
  pc.addTrack(microphone.getTracks()[0]);
  const channel = (window.__channel = pc.createDataChannel("oai-events"));
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  const response = await fetch(`${url}/v1/realtime/calls`, {
    method: "POST",
    body: offer.sdp,
    headers: { Authorization: `Bearer ${secret}`, "Content-Type": "application/sdp" },
  });
  const answer = await response.text();
  if (response.status !== 201) return { status: response.status, answer };
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  return { status: response.status, answer, location: response.headers.get("Location") };
}
"""

DENY_MICROPHONE_SCRIPT = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
"""


@contextmanager
def chromium_with_fake_microphone(fake_audio: Path, *extra_args: str) -> Iterator[Browser]:
    """Debian's Chromium, headless, whose microphone plays `fake_audio`; fails if it is missing, or
    if other interfaces than loopback are there for its WebRTC to offer."""
    assert_loopback_only()
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium fonts-liberation")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*chromium_args(fake_audio), *extra_args])
        yield browser
        browser.close()


def wait_for_no_calls(edge: Any, timeout_s: float = 15) -> None:
    """Wait until `edge` (an EdgeServer) has no WebRTC call left."""
    deadline = time.monotonic() + timeout_s
    while len(edge.app.state.services.calls):
        assert time.monotonic() < deadline, "the call was not freed"
        time.sleep(0.1)


DESKTOP = {"width": 1280, "height": 860}


@contextmanager
def page_opener(browser: Browser, *init_scripts: str) -> Iterator[Callable[..., Page]]:
    """Opens the UI at a URL, each page in a fresh browser context (`DESKTOP` unless a `viewport` is
    given) with `RECORDER_SCRIPT` and `init_scripts` installed; no page may raise a script error."""
    contexts, errors = [], []

    def open_(url: str, *, init_script: str | None = None, **context_options: Any) -> Page:
        context_options.setdefault("viewport", DESKTOP)
        context = browser.new_context(**context_options)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(error))
        for script in (RECORDER_SCRIPT, *init_scripts, init_script):
            if script:
                page.add_init_script(script)
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"script errors in the page: {errors}"


def events(page: Page, kind: str) -> list[dict]:
    """The realtime server events of `kind` the page received (recorded by `RECORDER_SCRIPT`)."""
    return [e for e in page.evaluate("window.__events") if e["type"] == kind]


def wait_for_events(page: Page, kind: str, count: int = 1, timeout_s: float = 90) -> list[dict]:
    """Wait until the page received `count` events of `kind`; all it received of that kind."""
    page.wait_for_function(
        "([kind, count]) => window.__events.filter((e) => e.type === kind).length >= count",
        arg=[kind, count],
        timeout=timeout_s * 1000,
    )
    return events(page, kind)


def mint_secret(edge_url: str, key: str, session: dict[str, Any]) -> str:
    """An ephemeral `ek_` secret for `session`, minted with the API key `key`."""
    minted = httpx.post(
        f"{edge_url}/v1/realtime/client_secrets", json={"session": session}, headers={"authorization": f"Bearer {key}"}
    )
    assert minted.status_code == 200, minted.text
    return minted.json()["value"]
