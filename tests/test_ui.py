"""The browser UI at `/`, driven in Debian's Chromium through Playwright, against a real edge in
front of the session's vLLM (tiny random-weight model: its transcripts are noise text, so the
tests compare what the page shows with what the server sent).

Chromium's fake microphone plays a recording of three utterances separated by pauses (built from
tests/data/jfk.flac). Screenshots land in tests/artifacts/.
"""

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect
from ui_helpers import (
    ARTIFACTS,
    DATA,
    DENY_MICROPHONE_SCRIPT,
    DESKTOP,
    chromium_with_fake_microphone,
    events,
    fake_speech_wav,
    page_opener,
    vad_turns,
)

VIEWPORTS = {"desktop": DESKTOP, "phone": {"width": 390, "height": 844}}
COMPLETED = "conversation.item.input_audio_transcription.completed"
PARTIAL = "conversation.item.input_audio_transcription.partial"


@pytest.fixture(scope="module")
def utterances(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The fake microphone's recording and how many utterances (turns) it holds."""
    path = tmp_path_factory.mktemp("ui") / "utterances.wav"
    count = fake_speech_wav(path)
    assert vad_turns(path) == count, "the recording must hold exactly one VAD turn per utterance"
    return path, count


@pytest.fixture(scope="module")
def browser(utterances: tuple[Path, int]) -> Iterator[Browser]:
    with chromium_with_fake_microphone(utterances[0]) as browser:
        yield browser


@pytest.fixture(scope="module", autouse=True)
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Open the UI of an edge in a fresh browser context; no page may raise a script error."""
    with page_opener(browser) as open_:
        yield lambda url, viewport="desktop", init_script=None: open_(
            url, viewport=VIEWPORTS[viewport], accept_downloads=True, init_script=init_script
        )


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def shown_transcript(transcript: str) -> str:
    return transcript.strip() or "(nothing recognised)"


# --- Live mode against the real realtime server ---------------------------------------------------


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_live_shows_one_final_turn_per_utterance(open_page, edge, utterances, viewport: str) -> None:
    _, count = utterances
    page = open_page(edge.url, viewport)
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#connection")).to_have_text("Live", timeout=30_000)
    expect(page.locator("#connection")).to_have_attribute("data-transport", "webrtc")  # the microphone as Opus
    expect(page.locator("#speaking")).to_have_attribute("data-active", "true", timeout=30_000)
    expect(page.locator("#speaking")).to_contain_text("Speaking")

    finals = page.locator('.turn[data-state="final"]')
    expect(finals).to_have_count(count, timeout=120_000)
    page.wait_for_timeout(2000)  # the recording is silent from here on: no further turn
    expect(page.locator(".turn")).to_have_count(count)

    completed = events(page, COMPLETED)
    assert len(completed) == count
    assert finals.locator(".turn-text.final, .turn-text.empty-text").all_inner_texts() == [
        shown_transcript(e["transcript"]) for e in completed
    ]
    for latency in finals.locator(".latency").all_inner_texts():
        assert re.fullmatch(r"\d+\.\d\d s", latency), latency
        assert 0 < float(latency[:-2]) < 30
    assert len(events(page, "input_audio_buffer.speech_started")) == count
    partials = {e["transcript"] for e in events(page, PARTIAL) if e["transcript"].strip()}
    assert partials, "partial transcripts are on by default"
    assert partials & set(page.evaluate("window.__provisional")), "partials were never shown as provisional text"
    shot(page, f"live-{viewport}")

    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("button", name="Start")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#connection")).to_have_text("Not connected")
    expect(page.locator("#speaking")).to_contain_text("Not listening")
    expect(finals).to_have_count(count)  # the transcript stays after stopping


def test_live_assistant_replies_appear_under_turns(open_page, edge) -> None:
    page = open_page(edge.url)
    page.get_by_role("switch", name="Assistant replies").check()
    page.get_by_role("button", name="Start").click()
    replies = page.locator(".turn .reply .reply-text")
    # The fake microphone keeps talking, so a reply may be cancelled by the next turn (its text then
    # reads "(cancelled)"): wait for one that finished its text.
    page.wait_for_function(
        "() => window.__events.some((e) => e.type === 'response.output_text.done' && e.text)", timeout=120_000
    )
    done = events(page, "response.output_text.done")
    # A reply shows its text, and its status when it did not complete (a random model may use up its tokens).
    statuses = {e["response"]["status"] for e in events(page, "response.done")}
    assert statuses <= {"completed", "incomplete", "cancelled"}, statuses
    # innerText collapses the whitespace a random model's text may hold.
    shown = [" ".join(text.split()) for text in replies.all_inner_texts()]
    texts = [" ".join(d["text"].split()) for d in done]
    assert any(text.startswith(t) for t in texts for text in shown if t), (shown, texts)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#connection")).to_have_text("Not connected")


def test_live_full_server_says_so_and_retries(open_page, make_edge) -> None:
    full = make_edge(realtime_max_sessions=0)
    page = open_page(full.url)
    page.get_by_role("button", name="Start").click()
    message = page.locator("#live-message")
    expect(message).to_contain_text("The server is full.", timeout=30_000)
    expect(message).to_contain_text("Every live transcription session is in use")
    expect(page.locator("#connection")).to_have_text(re.compile(r"Reconnecting in [5-9] s"))
    page.get_by_role("button", name="Stop").click()
    expect(message).to_be_hidden()
    expect(page.locator("#connection")).to_have_text("Not connected")


def test_unreachable_server(open_page, make_edge) -> None:
    gone = make_edge()
    page = open_page(gone.url)
    page.wait_for_load_state("networkidle")  # the page has all it needs from the server
    gone.stop()

    page.get_by_role("button", name="Start").click()
    message = page.locator("#live-message")
    expect(message).to_contain_text("Cannot reach the server.", timeout=30_000)
    expect(message).to_contain_text("press Stop to give up")
    expect(page.locator("#connection")).to_have_text(re.compile(r"Reconnecting"))
    shot(page, "live-unreachable")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#connection")).to_have_text("Not connected")

    page.get_by_role("tab", name="File").click()
    page.set_input_files("#file-input", DATA / "jfk.flac")
    page.get_by_role("button", name="Transcribe").click()
    expect(page.locator("#file-message")).to_contain_text("Cannot reach the server.")
    expect(page.locator("#file-progress")).to_be_hidden()
    expect(page.get_by_role("button", name="Transcribe")).to_be_enabled()


def test_denied_microphone(open_page, edge) -> None:
    page = open_page(edge.url, init_script=DENY_MICROPHONE_SCRIPT)
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#live-message")).to_contain_text("Microphone access was denied.")
    expect(page.get_by_role("button", name="Start")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#connection")).to_have_text("Not connected")
    assert page.evaluate("window.__events") == []  # no session was opened


# --- Live mode against a scripted server: every protocol event the page renders ------------------


class ScriptedRealtime:
    """Stands in for `/v1/realtime` inside the browser (Playwright's WebSocket routing)."""

    def __init__(self) -> None:
        self.connections: list[WebSocketRoute] = []
        self.sessions: list[dict] = []
        self.audio_bytes: list[int] = []
        self.first_audio_at: float | None = None

    def accept(self, ws: WebSocketRoute) -> None:
        self.connections.append(ws)
        ws.on_message(lambda message: self.receive(ws, json.loads(message)))
        ws.send(json.dumps({"type": "session.created", "session": {}}))

    def receive(self, ws: WebSocketRoute, event: dict) -> None:
        if event["type"] == "session.update":
            self.sessions.append(event["session"])
            ws.send(json.dumps({"type": "session.updated", "session": event["session"]}))
        elif event["type"] == "input_audio_buffer.append":
            self.first_audio_at = self.first_audio_at or time.monotonic()
            self.audio_bytes.append(len(base64.b64decode(event["audio"])))

    def send(self, **event: object) -> None:
        self.connections[-1].send(json.dumps(event))


def until(page: Page, predicate: Callable[[], object], timeout_s: float = 10) -> None:
    """Wait for `predicate`; the scripted server only runs while Playwright is waiting."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)


@contextmanager
def scripted(page: Page) -> Iterator[ScriptedRealtime]:
    """The WebSocket scripted; WebRTC calls refused as by a server without them (404), so that
    live mode falls back to the WebSocket."""
    server = ScriptedRealtime()
    page.route("**/v1/realtime/calls", lambda route: route.fulfill(status=404, json=NOT_FOUND))
    page.route_web_socket(re.compile(r"/v1/realtime"), server.accept)
    yield server


NOT_FOUND = {"error": {"message": "Not Found", "type": "invalid_request_error", "param": None, "code": None}}


def test_live_falls_back_to_the_websocket_without_webrtc_calls(open_page, edge) -> None:
    page = open_page(edge.url)
    page.route("**/v1/realtime/calls", lambda route: route.fulfill(status=404, json=NOT_FOUND))
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#connection")).to_have_text("Live", timeout=30_000)
    expect(page.locator("#connection")).to_have_attribute("data-transport", "websocket")
    expect(page.locator('.turn[data-state="final"]').first).to_be_visible(timeout=60_000)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#connection")).to_have_text("Not connected")


def test_live_falls_back_to_the_websocket_when_webrtc_finds_no_path(open_page, edge) -> None:
    """The answer's candidates point at a port nothing listens on: ICE fails, the WebSocket serves."""
    page = open_page(edge.url)

    def unreachable_answer(route) -> None:
        answer = route.fetch()
        sdp = re.sub(r"(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1) \d+", r"\1 9", answer.text())
        route.fulfill(response=answer, body=sdp)

    page.route("**/v1/realtime/calls", unreachable_answer)
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#connection")).to_have_attribute("data-transport", "websocket", timeout=30_000)
    expect(page.locator('.turn[data-state="final"]').first).to_be_visible(timeout=60_000)
    page.get_by_role("button", name="Stop").click()


def test_live_renders_the_realtime_protocol(open_page, edge) -> None:
    page = open_page(edge.url)
    with scripted(page) as server:
        page.locator("#language").select_option("fr")
        page.get_by_label("Speech detection threshold").fill("0.7")
        page.get_by_label("Pause that ends a turn").fill("1200")
        page.get_by_role("switch", name="Show text while speaking").uncheck()
        expect(page.locator("#silence-ms-value")).to_have_text("1.2 s")
        page.get_by_role("button", name="Start").click()
        expect(page.locator("#connection")).to_have_text("Live")
        assert server.sessions[0] == {
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "whisper-1", "language": "fr", "partial_interval_ms": 0},
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.7,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 1200,
                    },
                },
            },
        }

        # Audio: 100 ms chunks of 24 kHz PCM16, as fast as real time.
        page.wait_for_timeout(3000)
        sent_s = sum(server.audio_bytes) / 2 / 24000
        elapsed_s = time.monotonic() - server.first_audio_at
        assert set(server.audio_bytes[:-1]) == {4800}
        assert 0.75 * elapsed_s < sent_s < 1.15 * elapsed_s + 0.2, (sent_s, elapsed_s)

        turn = page.locator('.turn[data-item-id="item_1"]')
        server.send(type="input_audio_buffer.speech_started", item_id="item_1", audio_start_ms=100)
        expect(page.locator("#speaking")).to_have_attribute("data-active", "true")
        expect(turn).to_have_attribute("data-state", "speaking")
        server.send(type=PARTIAL, item_id="item_1", content_index=0, transcript="bonjour tout")
        expect(turn.locator(".turn-text.provisional")).to_have_text("bonjour tout")
        server.send(type="input_audio_buffer.speech_stopped", item_id="item_1", audio_end_ms=1500)
        expect(page.locator("#speaking")).to_have_attribute("data-active", "false")
        server.send(
            type="conversation.item.input_audio_transcription.delta",
            item_id="item_1",
            content_index=0,
            delta="Bonjour ",
        )
        server.send(
            type="conversation.item.input_audio_transcription.delta", item_id="item_1", content_index=0, delta="tout"
        )
        expect(turn.locator(".turn-text.provisional")).to_have_text("Bonjour tout")
        server.send(type=COMPLETED, item_id="item_1", content_index=0, transcript="Bonjour tout le monde.", usage={})
        expect(turn.locator(".turn-text.final")).to_have_text("Bonjour tout le monde.")
        expect(turn.locator(".turn-text.provisional")).to_have_count(0)
        expect(turn).to_have_attribute("data-state", "final")
        # speech ended at 1.5 s of audio, sent ~1.5 s after the first chunk, the text came >1.5 s later
        latency = float(turn.locator(".latency").inner_text()[:-2])
        assert latency > 1.0

        page.get_by_role("switch", name="Assistant replies").check()
        until(page, lambda: server.sessions[-1]["type"] == "realtime")  # a conversation, in the running session
        assert server.sessions[-1]["output_modalities"] == ["text"]
        server.send(type="response.created", response={"id": "resp_1"})
        server.send(type="response.output_text.delta", response_id="resp_1", item_id="item_a", delta="Salut")
        expect(turn.locator(".reply-text")).to_have_text("Salut")
        server.send(type="response.output_text.delta", response_id="resp_1", item_id="item_a", delta=" !")
        server.send(type="response.output_text.done", response_id="resp_1", item_id="item_a", text="Salut !")
        server.send(type="response.done", response={"id": "resp_1", "status": "completed"})
        expect(turn.locator(".reply-text")).to_have_text("Salut !")

        server.send(type="input_audio_buffer.speech_started", item_id="item_2", audio_start_ms=4000)
        server.send(
            type="conversation.item.input_audio_transcription.failed",
            item_id="item_2",
            content_index=0,
            error={"message": "the model is down"},
        )
        expect(page.locator('.turn[data-item-id="item_2"] .turn-text.failed')).to_have_text(
            "Transcription failed: the model is down"
        )
        server.send(type="error", error={"type": "invalid_request_error", "code": "x", "message": "Bad audio."})
        expect(page.locator("#live-message")).to_contain_text("Bad audio.")
        shot(page, "live-protocol-desktop")

        # A dropped connection: said, retried, and the message goes once the session is back.
        server.send(type="input_audio_buffer.speech_started", item_id="item_3", audio_start_ms=6000)
        server.connections[0].close(code=1011, reason="Internal error.")
        message = page.locator("#live-message")
        expect(message).to_contain_text("The connection to the server was lost.")
        expect(page.locator('.turn[data-item-id="item_3"]')).to_have_attribute("data-state", "interrupted")
        expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)
        expect(message).to_be_hidden()
        assert len(server.connections) == 2 and len(server.sessions) >= 3

        page.get_by_role("button", name="Stop").click()
        expect(page.locator("#connection")).to_have_text("Not connected")
        expect(page.locator(".turn")).to_have_count(3)


# --- File mode ------------------------------------------------------------------------------------


def display_time(seconds: float) -> str:
    """The page's m:ss.s clock."""
    tenths = round(seconds * 10)
    return f"{tenths // 600}:{(tenths % 600) / 10:04.1f}"


def srt_cues(text: str) -> list[tuple[str, str, str]]:
    return re.findall(r"(\d\d:\d\d:\d\d[,.]\d\d\d) --> (\d\d:\d\d:\d\d[,.]\d\d\d)\n(.*)", text)


def clock_seconds(clock: str) -> float:
    h, m, s = clock.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def downloaded(page: Page, label: str) -> tuple[str, str]:
    with page.expect_download() as info:
        page.get_by_role("group", name="Download the transcript").get_by_role("button", name=label).click()
    download = info.value
    return download.suggested_filename, Path(download.path()).read_text()


def throttle_upload(page: Page, bytes_per_s: int) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_s},
    )


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_file_upload_with_segments_and_downloads(open_page, edge, viewport: str) -> None:
    page = open_page(edge.url, viewport)
    page.get_by_role("tab", name="File").click()
    page.get_by_label("Choose an audio or video file").set_input_files(DATA / "jfk.flac")
    expect(page.locator("#file-name")).to_contain_text("jfk.flac")
    expect(page.get_by_label("Response format")).to_have_value("verbose_json")
    expect(page.get_by_role("switch", name="Show text as it is transcribed")).to_be_disabled()
    throttle_upload(page, bytes_per_s=600_000)  # ~2 s for the 1.2 MB file
    with page.expect_response("**/v1/audio/transcriptions") as response:
        page.get_by_role("button", name="Transcribe").click()
        expect(page.locator("#file-progress-label")).to_have_text(re.compile(r"Uploading… [1-9]\d?%"))
        assert 0 < float(page.locator("#file-progress-bar").get_attribute("value")) < 100
    body = response.value.json()
    segments = body["segments"]

    rows = page.locator("#segments li")
    expect(rows).to_have_count(len(segments))
    for row, segment in zip(rows.all(), segments, strict=False):
        expect(row.locator("time")).to_have_text(f"{display_time(segment['start'])} – {display_time(segment['end'])}")
        expect(row.locator("span")).to_have_text(segment["text"].strip())
    expect(page.locator("#file-meta")).to_contain_text(f"{len(segments)} segment")
    expect(page.locator("#file-meta")).to_contain_text(f"{display_time(body['duration'])} of audio")
    expect(page.locator("#file-progress")).to_be_hidden()
    shot(page, f"file-{viewport}")

    name, srt = downloaded(page, "SRT")
    assert name == "jfk.srt"
    cues = srt_cues(srt)
    assert [(clock_seconds(a), clock_seconds(b), t) for a, b, t in cues] == [
        (pytest.approx(s["start"], abs=1e-3), pytest.approx(s["end"], abs=1e-3), s["text"].strip()) for s in segments
    ]
    assert "," in cues[0][0]
    name, vtt = downloaded(page, "VTT")
    assert name == "jfk.vtt" and vtt.startswith("WEBVTT\n")
    assert [t for _, _, t in srt_cues(vtt)] == [s["text"].strip() for s in segments]
    assert "." in srt_cues(vtt)[0][0]
    assert downloaded(page, "TXT") == ("jfk.txt", body["text"].strip() + "\n")
    name, raw = downloaded(page, "JSON")
    assert name == "jfk.json" and json.loads(raw) == body


def test_file_from_url_as_subtitles(open_page, edge, media_url) -> None:
    page = open_page(edge.url)
    page.get_by_role("tab", name="File").click()
    page.get_by_label("Audio URL").fill(f"{media_url}/long.wav")
    page.get_by_label("Response format").select_option("srt")
    page.evaluate(
        """() => {
            const label = document.querySelector("#file-progress-label");
            window.progressLabels = [];
            new MutationObserver(() => window.progressLabels.push(label.textContent))
                .observe(label, { childList: true, characterData: true, subtree: true });
        }"""
    )
    with page.expect_response("**/v1/audio/transcriptions") as response:
        page.get_by_role("button", name="Transcribe").click()
        # a long file: an indeterminate progress bar while the server fetches and transcribes
        expect(page.locator("#file-progress-label")).to_contain_text("Fetching and transcribing")
        assert page.locator("#file-progress-bar").get_attribute("value") is None
        expect(page.get_by_role("button", name="Transcribe")).to_be_disabled()
    assert response.value.request.post_data_buffer.count(b'name="url"') == 1
    # the URL's tiny form upload is no step of its own: no "Uploading…" or bare "Transcribing…"
    labels = page.evaluate("window.progressLabels")
    assert labels and all(text.startswith("Fetching and transcribing") for text in labels), labels
    cues = srt_cues(response.value.text())
    assert len(cues) >= 2
    rows = page.locator("#segments li")
    expect(rows).to_have_count(len(cues))
    for row, (start, end, text) in zip(rows.all(), cues, strict=False):
        expect(row.locator("time")).to_have_text(
            f"{display_time(clock_seconds(start))} – {display_time(clock_seconds(end))}"
        )
        expect(row.locator("span")).to_have_text(text.strip())
    name, srt = downloaded(page, "SRT")
    assert name == "long.srt"
    assert srt_cues(srt) == [(a, b, t.strip()) for a, b, t in cues]


def test_file_streaming_shows_text(open_page, edge) -> None:
    page = open_page(edge.url)
    page.get_by_role("tab", name="File").click()
    page.get_by_label("Choose an audio or video file").set_input_files(DATA / "jfk.flac")
    page.get_by_label("Response format").select_option("text")
    page.get_by_role("switch", name="Show text as it is transcribed").check()
    with page.expect_response("**/v1/audio/transcriptions") as response:
        page.get_by_role("button", name="Transcribe").click()
    sse = response.value.text()
    assert response.value.headers["content-type"].startswith("text/event-stream")  # stream=true was sent
    done = [json.loads(line[5:]) for line in sse.splitlines() if line.startswith("data:")][-1]
    assert done["type"] == "transcript.text.done"
    expect(page.locator("#file-text")).to_have_text(done["text"])
    expect(page.locator("#file-meta")).to_have_text("text")
    assert downloaded(page, "TXT")[1] == done["text"].strip() + "\n"
    expect(page.get_by_role("button", name="SRT")).to_be_disabled()


def test_file_errors_are_explained(open_page, edge) -> None:
    page = open_page(edge.url)
    page.get_by_role("tab", name="File").click()
    page.get_by_role("button", name="Transcribe").click()
    expect(page.locator("#file-message")).to_contain_text("Nothing to transcribe yet.")

    page.get_by_label("Audio URL").fill("http://10.255.255.1/talk.wav")
    with page.expect_response("**/v1/audio/transcriptions") as response:
        page.get_by_role("button", name="Transcribe").click()
    assert response.value.status == 400
    message = page.locator("#file-message")
    expect(message).to_contain_text("The server refused the request (error 400).")
    expect(message).to_contain_text(response.value.json()["error"]["message"])
    expect(page.locator("#file-result")).to_be_hidden()
