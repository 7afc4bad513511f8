"""The OpenAI Agents SDK for JavaScript (`@openai/agents-realtime` from npm, bundled for the page by
esbuild) connects from Chromium to the edge over its default browser transport, WebRTC, with an
ephemeral secret: a voice agent's session hears the fake microphone, gets transcripts of its
turns and text replies, as against OpenAI's own service.

Like tests/test_webrtc_browser.py, these run only with loopback as the one interface.
"""

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from node_helpers import node_packages
from playwright.sync_api import Browser, Page
from ui_helpers import (
    events,
    mint_secret,
    page_opener,
    wait_for_events,
    wait_for_no_calls,
)

from tests.conftest import SERVED_NAME, EdgeServer

KEY = "sk-agents-0123456789abcdefghijklmn"
ENTRY = Path(__file__).parent / "node" / "agents_webrtc_page.mjs"
COMPLETED = "conversation.item.input_audio_transcription.completed"

# A voice agent as the SDK's guide writes it, pointed at the edge instead of api.openai.com.
AGENT = """
async ({ url, secret, model }) => {
  const { RealtimeAgent, RealtimeSession, OpenAIRealtimeWebRTC } = window.agentsRealtime;
  const agent = new RealtimeAgent({ name: "Assistant", instructions: "Answer briefly." });
  const session = (window.__session = new RealtimeSession(agent, {
    transport: new OpenAIRealtimeWebRTC({ baseUrl: `${url}/v1/realtime/calls` }),
    model,
    config: { outputModalities: ["text"], audio: { input: { turnDetection: { type: "server_vad" } } } },
  }));
  const errors = (window.__errors = []);
  session.on("error", (error) => errors.push(String(error.error?.message ?? error.error ?? error)));
  await session.connect({ apiKey: secret });
  return session.transport.callId;
}
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SDK and the page's entry, bundled into one browser script."""
    folder = node_packages(ENTRY)
    out = tmp_path_factory.mktemp("agents") / "agents-realtime.js"
    subprocess.run(
        [folder / "node_modules" / ".bin" / "esbuild", ENTRY.name, "--bundle", "--format=iife",
         "--platform=browser", f"--outfile={out}", "--log-level=warning"],
        cwd=folder,
        check=True,
        timeout=120,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def rtc_edge(make_edge: Callable[..., EdgeServer]) -> EdgeServer:
    return make_edge(api_keys=f"agents:{KEY}", webrtc_host_addresses="127.0.0.1")


@pytest.fixture
def page(browser: Browser, rtc_edge: EdgeServer, bundle: Path) -> Iterator[Page]:
    with page_opener(browser) as open_page:
        page = open_page(f"{rtc_edge.url}/")
        page.add_script_tag(path=str(bundle))
        yield page


def test_a_voice_agent_transcribes_and_replies_over_webrtc(page: Page, rtc_edge: EdgeServer) -> None:
    call_id = page.evaluate(
        AGENT,
        {
            "url": rtc_edge.url,
            "secret": mint_secret(rtc_edge.url, KEY, {"type": "realtime", "model": SERVED_NAME}),
            "model": SERVED_NAME,
        },
    )
    assert call_id and call_id.startswith("rtc_")
    (updated, *_) = events(page, "session.updated")  # connect() resolved on the SDK's session.update
    assert updated["session"]["instructions"] == "Answer briefly."
    assert updated["session"]["output_modalities"] == ["text"]
    completed = wait_for_events(page, COMPLETED, 2)
    assert all(item["transcript"] for item in completed)
    done = wait_for_events(page, "response.done")[0]["response"]
    assert done["output"] and done["output"][0]["content"][0]["text"]
    # The SDK's own history holds the user's transcribed turn and the agent's reply.
    history = page.evaluate("window.__session.history.map((item) => [item.role, item.status, item.type])")
    assert ["user", "completed", "message"] in history and any(role == "assistant" for role, _, _ in history)
    assert page.evaluate("window.__errors") == []
    page.evaluate("window.__session.close()")
    wait_for_no_calls(rtc_edge)
