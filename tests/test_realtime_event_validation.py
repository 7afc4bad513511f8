"""The suite-wide check that every OpenAI server event validates against the `openai` SDK's types
(tests/event_validation.py), and the rendering of every core event in both flavours under it."""

from typing import Literal

import pytest

from server.backend.vllm_realtime.words import Word
from server.core.usage import StreamUsage
from server.realtime import events as ev
from server.realtime.config import AudioFormat, Conversation, FunctionTool, SessionConfig
from server.realtime.conversation import items
from server.realtime.protocols import openai_events
from server.realtime.protocols.openai import OpenAIProtocol
from tests.event_validation import CHECK, problems
from tests.realtime_helpers import TEXT_REPLY


class _CommittedWithoutItem(openai_events.ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"


def test_an_invalid_event_sent_is_caught_with_the_test_that_sent_it(request: pytest.FixtureRequest) -> None:
    message = openai_events.sent(_CommittedWithoutItem(), "ga")
    caught = CHECK.take(request.node.nodeid)  # taken, so that this test's own check passes
    assert [event.message for event in caught] == [message]
    assert str(caught[0]).startswith("'input_audio_buffer.committed' does not validate")
    assert "item_id" in str(caught[0]) and "Field required" in str(caught[0])


def test_the_check_knows_each_flavour_and_its_exceptions() -> None:
    delta = {"type": "response.text.delta", "event_id": "e", "response_id": "r", "item_id": "i"}
    delta |= {"output_index": 0, "content_index": 0, "delta": "x"}
    assert problems(delta, "beta") == []
    assert "does not match any of the expected tags" in problems(delta, "ga")[0]
    partial = {"type": "conversation.item.input_audio_transcription.partial", "event_id": "e"}
    assert problems(partial, "ga") == problems(partial, "beta") == []
    created = {"type": "transcription_session.created", "event_id": "e"}  # checked as `.updated`
    assert "transcription_session.updated.session: Field required" in problems(created, "beta")[0]
    error = {"type": "error", "event_id": "e", "error": {"type": "invalid_request_error", "message": 3}}
    assert [found.split(":")[0] for found in problems(error, None)] == ["ga", "beta"]


USAGE = StreamUsage(input_tokens=3, output_tokens=4)
WEATHER = FunctionTool("get_weather", "The weather.", {"type": "object", "properties": {"city": {"type": "string"}}})
CORE_EVENTS: list[ev.Event] = [
    ev.SpeechStarted("item_1", 10),
    ev.SpeechStopped("item_1", 900),
    ev.Committed("item_1", None),
    ev.Committed("item_2", "item_1"),
    ev.TranscriptDelta("item_1", "Hel"),
    ev.TranscriptDelta("item_1", "lo", audio_end_ms=800),
    ev.TranscriptPartial("item_1", "Hel"),
    ev.TranscriptCompleted("item_1", "Hello", USAGE, 10, 900),
    ev.TranscriptCompleted("item_1", "Hello", USAGE, 10, 900, words=(Word("Hello", 0.01, 0.9),)),
    ev.TranscriptFailed("item_1", "backend_error", "vLLM failed."),
]


def _conversation_events() -> list[ev.Event]:
    """A response with text and a function call, then cancelled and failed ones, and client items."""
    state = items.ResponseState("resp_1", True, {"k": "v"}, 8)
    message = items.Message("item_9", "assistant", [items.OutputText()], status="in_progress")
    call = items.FunctionCall("item_10", "call_abcdefghi", "get_weather", status="in_progress")
    finished = items.ResponseState("resp_1", True, None, None, [message, call], "completed")
    finished.usage.input_tokens, finished.usage.output_tokens = 3, 4
    user = items.Message("item_2", "user", [items.InputText("Hi"), items.InputAudio(None, 900, "hello")])
    return [
        ev.ResponseStarted(state),
        ev.OutputItemStarted(state, message, 0, "item_1"),
        ev.OutputTextDelta("resp_1", "item_9", 0, "Hi"),
        ev.OutputItemFinished(state, message, 0),
        ev.OutputItemStarted(state, call, 1, "item_9"),
        ev.FunctionArgumentsDelta("resp_1", call, 1, "{}"),
        ev.OutputItemFinished(state, call, 1),
        ev.ResponseFinished(finished),
        ev.ResponseFinished(items.ResponseState("resp_2", False, None, None, [], "cancelled", "turn_detected")),
        ev.ResponseFinished(items.ResponseState("resp_3", True, None, 5, [], "incomplete", "max_output_tokens")),
        ev.ResponseFinished(
            items.ResponseState("resp_4", True, None, None, [], "failed", error=("backend_error", "vLLM failed."))
        ),
        ev.ItemAdded(user, None),
        ev.ItemAdded(items.FunctionCallOutput("item_3", "call_abcdefghi", "sunny"), "item_2"),
        ev.ItemAdded(items.Message("item_4", "system", [items.InputText("Be brief.")]), "item_3"),
        ev.ItemDeleted("item_2"),
    ]


@pytest.mark.parametrize("beta", [False, True], ids=["ga", "beta"])
def test_every_core_event_renders_to_events_the_sdk_accepts(beta: bool) -> None:
    """The plugin checks each of them as it is rendered; the ones only a feature rarely sends
    (failed responses, incomplete ones) are covered here. Conversation sessions are GA's only."""
    protocol = OpenAIProtocol(beta=beta, default_model="voxtral", lifetime_s=60)
    flavour: openai_events.Flavour = "beta" if beta else "ga"
    core = CORE_EVENTS if beta else CORE_EVENTS + _conversation_events()
    messages = protocol.opening(SessionConfig()) + [m for event in core for m in protocol.render(event)]
    if not beta:
        conversation = SessionConfig(
            kind="realtime", conversation=Conversation(tools=(WEATHER,), tool_choice="required")
        )
        messages += protocol.opening(conversation)
    assert messages and all(problems(message, flavour) == [] for message in messages)


def test_a_text_reply_renders_in_openais_order() -> None:
    protocol = OpenAIProtocol(beta=False, default_model="voxtral", lifetime_s=60)
    kinds = [m["type"] for event in _conversation_events()[:4] for m in protocol.render(event)]
    assert kinds == TEXT_REPLY


def test_a_deviation_loosens_its_one_field_only() -> None:
    protocol = OpenAIProtocol(beta=False, default_model="voxtral", lifetime_s=60)
    [created] = protocol.opening(SessionConfig(audio_format=AudioFormat("pcm16", 16000)))
    assert created["session"]["audio"]["input"]["format"]["rate"] == 16000 and problems(created, "ga") == []
    created["session"]["audio"]["input"]["format"]["rate"] = 44100
    assert "rate" in problems(created, "ga")[0]
    beta = OpenAIProtocol(beta=True, default_model="voxtral", lifetime_s=60)
    [created] = beta.opening(SessionConfig())
    assert "client_secret" not in created["session"] and problems(created, "beta") == []
    created["session"]["input_audio_transcription"]["model"] = 3
    assert "input_audio_transcription.model" in problems(created, "beta")[0]
