"""Property tests of the realtime event handlers: any client text, any JSON (well-formed events
with wrong values among them) gets a list of server events back, never an exception (which would
end the session with 1011), and the session stays usable.

The handlers run on a real session: the real batched VAD engine and the test session's real vLLM
(an unknown model in `session.update` is looked up there).
"""

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.backend.model_names import ModelNames
from server.backend.vllm_client import VLLMClient
from server.realtime.config import SessionConfig
from server.realtime.events import Event
from server.realtime.protocols.openai import OpenAIProtocol
from server.realtime.protocols.simple import SimpleProtocol
from server.realtime.session import RealtimeSession
from tests.conftest import edge_settings
from vad import BatchedVADEngine

PROTOCOLS = {
    "ga": lambda: OpenAIProtocol(beta=False, default_model=None, lifetime_s=60),
    "conversation": lambda: OpenAIProtocol(
        beta=False, default_model=None, lifetime_s=60, initial=SessionConfig(kind="realtime")
    ),
    "beta": lambda: OpenAIProtocol(beta=True, default_model=None, lifetime_s=60),
    "simple": SimpleProtocol,
}
EVENT_TYPES = [
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.delete",
    "conversation.item.truncate",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
    "audio",
]
KEYS = ["type", "audio", "data", "event_id", "session", "audio", "input", "format", "rate", "turn_detection"]
KEYS += ["item", "item_id", "previous_item_id", "response", "response_id", "content_index", "audio_end_ms"]
SESSION_KEYS = [
    "type",
    "audio",
    "input",
    "format",
    "rate",
    "transcription",
    "turn_detection",
    "model",
    "language",
    "prompt",
    "partial_interval_ms",
    "threshold",
    "prefix_padding_ms",
    "silence_duration_ms",
    "temperature",
    "max_output_tokens",
    "instructions",
    "tools",
    "tool_choice",
    "name",
    "parameters",
    "output_modalities",
    "eagerness",
    "create_response",
    "role",
    "content",
    "text",
    "call_id",
    "output",
    "conversation",
    "input_audio_format",
    "input_audio_transcription",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["audio/pcm", "audio/pcmu", "pcm16", "g711_ulaw", "server_vad", "en", "zz", "AAAA", "AAE="])
    | st.sampled_from(["realtime", "transcription", "semantic_vad", "message", "user", "input_text", "function"])
    | st.sampled_from(["function_call_output", "item_reference", "none", "required", "object", "root"])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(SESSION_KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)
base64_audio = st.binary(max_size=3000).map(lambda data: base64.b64encode(data).decode())
events = st.fixed_dictionaries(
    {"type": st.sampled_from(EVENT_TYPES) | st.text(max_size=10)},
    optional={
        "audio": base64_audio | json_values,
        "data": base64_audio | json_values,
        "event_id": st.text(max_size=300) | json_values,
        "session": json_values,
        "item": json_values,
        "response": json_values,
        "item_id": st.sampled_from(["root", "item_x"]) | json_values,
    },
)
texts = (
    events.map(json.dumps)
    | json_values.map(json.dumps)
    | st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4).map(json.dumps)
    | st.text(max_size=200)
    | st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth)
    | st.integers(1, 3000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth)
)


class Harness:
    """A session and its protocol on a private event loop, fed one client text at a time."""

    def __init__(self, vllm_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.settings = edge_settings(vllm_url)
        self.backend = VLLMClient(self.settings)
        self.engine = BatchedVADEngine()
        self.emitted: list[Event] = []
        self.loop.run_until_complete(self.engine.start())
        self.sessions: dict[str, tuple[Any, RealtimeSession]] = {}

    def session(self, name: str) -> tuple[Any, RealtimeSession]:
        if name not in self.sessions:
            protocol = PROTOCOLS[name]()

            async def make() -> RealtimeSession:
                return RealtimeSession(
                    protocol.initial_config(),
                    backend=self.backend,
                    models=ModelNames(self.settings, self.backend),
                    vad_engine=self.engine,
                    emit=self.emitted.append,
                    default_max_tokens=2,
                    max_commit_bytes=1_000_000,
                    conversation_max_bytes=1_000_000,
                    audio_turns=1,
                )

            self.sessions[name] = (protocol, self.loop.run_until_complete(make()))
        return self.sessions[name]

    def handle(self, name: str, text: str) -> list[dict[str, Any]]:
        protocol, session = self.session(name)
        return self.loop.run_until_complete(protocol.handle(text, session))

    def close(self) -> None:
        for _, session in self.sessions.values():
            self.loop.run_until_complete(session.aclose())
        self.loop.run_until_complete(self.engine.stop())
        self.loop.run_until_complete(self.backend.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def harness(vllm_url: str) -> Iterator[Harness]:
    harness = Harness(vllm_url)
    yield harness
    harness.close()


def check_answers(answers: list[dict[str, Any]], name: str) -> None:
    assert isinstance(answers, list)
    for answer in answers:
        assert isinstance(answer.get("type"), str)
        assert len(json.dumps(answer)) < 20_000  # nothing unbounded echoed back
        if answer["type"] == "error":
            error = answer if name == "simple" else answer["error"]
            assert isinstance(error["message"], str) and error["message"]
            assert isinstance(error["code"], str)


@pytest.mark.parametrize("name", PROTOCOLS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_any_client_text_gets_events_back(harness: Harness, name: str, text: str) -> None:
    check_answers(harness.handle(name, text), name)


@pytest.mark.parametrize("name", ["ga", "beta", "conversation"])
def test_the_session_still_works_after_the_fuzzing(harness: Harness, name: str) -> None:
    """After whatever was thrown at it, a valid update is applied and audio is taken."""
    update_kind = "transcription_session.update" if name == "beta" else "session.update"
    session = (
        {"input_audio_format": "pcm16", "turn_detection": None}
        if name == "beta"
        else {
            "type": "transcription" if name == "ga" else "realtime",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}},
        }
    )
    answers = harness.handle(name, json.dumps({"type": update_kind, "session": session}))
    assert [a["type"] for a in answers] == [update_kind.replace("update", "updated")], answers
    audio = base64.b64encode(bytes(4800)).decode()
    assert harness.handle(name, json.dumps({"type": "input_audio_buffer.append", "audio": audio})) == []
