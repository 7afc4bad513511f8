"""The OpenAI Agents SDK (`openai-agents`) holds a spoken conversation with a tool call through the
edge: a `RealtimeAgent` with a function tool, run by `RealtimeRunner` against the edge's URL, with
text output and the SDK's default turn detection (`semantic_vad`).

The tiny model has random weights, so it never chooses a tool by itself (and writes strings without
end: the tool takes a choice of cities): the session forces one
(`tool_choice: "required"`, which the edge holds with structured outputs). The tool, once run,
lets the model choose again (`tool_choice: "auto"`), as an app that wants one lookup per turn
would, so the agent's next response is its spoken-to-text reply. The SDK validates every server
event with the `openai` SDK's types and reports one that fails as an `error` event: none may come.
"""

import asyncio
from typing import Any, Literal

from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner, RealtimeSession
from agents.realtime.model_inputs import RealtimeModelSendRawMessage
from realtime_helpers import JFK_1, build_recording, pcm16, wait_until

from tests.conftest import SERVED_NAME, EdgeServer, vllm_requests_running


async def test_a_realtime_agent_talks_and_calls_a_tool_through_the_edge(edge: EdgeServer, vllm_url: str) -> None:
    calls: list[dict[str, Any]] = []
    session_box: list[RealtimeSession] = []

    @function_tool
    async def get_weather(city: Literal["Paris", "Rome"]) -> str:
        """The weather in a city."""
        calls.append({"city": city})
        await session_box[0].model.send_event(
            RealtimeModelSendRawMessage(
                message={
                    "type": "session.update",
                    "other_data": {"session": {"type": "realtime", "tool_choice": "auto"}},
                }
            )
        )
        return "sunny"

    agent = RealtimeAgent(name="weather", instructions="Answer briefly.", tools=[get_weather])
    runner = RealtimeRunner(
        agent,
        config={
            "model_settings": {
                "model_name": SERVED_NAME,
                "modalities": ["text"],
                "tool_choice": "required",
                "max_output_tokens": 60,
                "input_audio_transcription": {"model": SERVED_NAME},
            }
        },
    )
    url = f"{edge.url.replace('http://', 'ws://')}/v1/realtime?model={SERVED_NAME}"
    session = await runner.run(model_config={"url": url, "api_key": "unused"})
    events: list[Any] = []
    async with session:
        session_box.append(session)
        recording = build_recording([JFK_1])
        audio = pcm16(recording.audio, 24000)
        for start in range(0, len(audio), 4800):  # 100 ms at 24 kHz, as a microphone would
            await session.send_audio(audio[start : start + 4800])
        done = asyncio.Event()

        async def watch() -> None:
            async for event in session:
                events.append(event)
                # Done once the tool ran and the reply after it is in the history: the first
                # response (the call) ends with an `agent_end` of its own before that reply.
                if calls and event.type == "history_updated" and replied(event.history):
                    done.set()

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait_for(done.wait(), timeout=120)
        finally:
            watcher.cancel()
    kinds = [event.type for event in events]
    errors = [event for event in events if event.type == "error"]
    assert not errors, errors
    assert calls and isinstance(calls[0]["city"], str), kinds
    assert "tool_start" in kinds and "tool_end" in kinds
    tool_end = next(event for event in events if event.type == "tool_end")
    assert tool_end.output == "sunny"
    history = next(event for event in reversed(events) if event.type == "history_updated").history
    roles = [getattr(item, "role", item.type) for item in history]
    assert "user" in roles and "assistant" in roles, roles
    assert replied(history), history
    await wait_until(lambda: vllm_requests_running(vllm_url) == 0)


def replied(history: list[Any]) -> bool:
    """The history ends with the assistant's text reply (after the tool's call)."""
    replies = [item for item in history if getattr(item, "role", None) == "assistant"]
    return bool(replies) and any(getattr(part, "text", None) for part in replies[-1].content)


async def test_an_agent_with_the_sdks_default_model_gets_no_error(edge: EdgeServer) -> None:
    """Named nowhere, the model is the SDK's default (`gpt-realtime-2.1`, in its `session.update`):
    an alias of the served model, so the session starts without an `error`."""
    agent = RealtimeAgent(name="plain", instructions="Answer briefly.")
    runner = RealtimeRunner(agent, config={"model_settings": {"modalities": ["text"]}})
    url = f"{edge.url.replace('http://', 'ws://')}/v1/realtime"
    session = await runner.run(model_config={"url": url, "api_key": "unused"})
    server_events: list[dict[str, Any]] = []
    errors: list[Any] = []

    async def until_updated() -> None:
        async for event in session:
            if event.type == "error":
                errors.append(event)
            if event.type == "raw_model_event" and event.data.type == "raw_server_event":
                server_events.append(event.data.data)
                if event.data.data.get("type") == "session.updated":
                    return

    async with session:
        await asyncio.wait_for(until_updated(), timeout=60)
        await asyncio.sleep(0.5)  # an error after the update would follow it at once
    updated = server_events[-1]["session"]
    assert updated["model"] == "gpt-realtime-2.1", updated  # the alias, as asked
    assert not errors and not [e for e in server_events if e.get("type") == "error"], (errors, server_events)
