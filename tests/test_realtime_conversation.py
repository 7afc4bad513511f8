"""Conversation sessions (`session.type: "realtime"`) through the `openai` SDK's GA realtime client:
spoken turns get streamed text replies from the served model, responses can be interrupted and
cancelled, made outside the conversation, and call functions; items are created, retrieved and
deleted. Every server event is checked against the SDK's types (tests/event_validation.py)."""

import base64
import json
from typing import Any

from realtime_helpers import (
    JFK_1,
    JFK_2,
    TEXT_REPLY,
    TRANSCRIPTION,
    VAD,
    build_recording,
    collect,
    count,
    of_type,
    openai_client,
    pcm16,
    send_paced,
    wait_until,
)

from tests.conftest import SERVED_NAME, EdgeServer, vllm_requests_running

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 16},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
    },
}


def conversation(**extra: Any) -> dict[str, Any]:
    return {
        "type": "realtime",
        "output_modalities": ["text"],
        "instructions": "Answer briefly.",
        "max_output_tokens": 8,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 16000},
                "transcription": {"model": SERVED_NAME},
                "turn_detection": VAD,
                **extra.pop("audio_input", {}),
            }
        },
        **extra,
    }


def connect(edge: EdgeServer) -> Any:
    return openai_client(edge).realtime.connect(model=SERVED_NAME)


async def opened(conn: Any, **extra: Any) -> dict[str, Any]:
    created = json.loads(await conn.recv_bytes())
    assert created["type"] == "session.created" and created["session"]["type"] == "realtime", created
    await conn.session.update(session=conversation(**extra))
    updated = json.loads(await conn.recv_bytes())
    assert updated["type"] == "session.updated", updated
    return updated["session"]


async def test_a_spoken_turn_gets_a_streamed_text_reply(edge: EdgeServer) -> None:
    async with connect(edge) as conn:
        session = await opened(conn)
        assert session["output_modalities"] == ["text"] and session["model"] == SERVED_NAME
        recording = build_recording([JFK_1])
        await send_paced(lambda audio: conn.input_audio_buffer.append(audio=audio), pcm16(recording.audio), 32000)
        events = await collect(
            conn.recv_bytes,
            lambda seen: bool(of_type(seen, "response.done")) and bool(of_type(seen, f"{TRANSCRIPTION}.completed")),
        )
    kinds = [event["type"] for event in events]
    user_item = of_type(events, "input_audio_buffer.committed")[0]["item_id"]
    done = of_type(events, "response.done")[0]["response"]
    assert done["status"] in ("completed", "incomplete"), done
    assert done["usage"]["output_tokens"] > 0 and done["usage"]["input_tokens"] > 0
    reply = done["output"][0]
    assert reply["type"] == "message" and reply["role"] == "assistant"
    deltas = "".join(event["delta"] for event in of_type(events, "response.output_text.delta"))
    assert deltas and reply["content"][0]["text"] == deltas
    assert of_type(events, "response.output_text.done")[0]["text"] == deltas
    reply_flow = [*TEXT_REPLY, "response.done"]
    positions = [kinds.index(kind, kinds.index("response.created")) for kind in reply_flow]
    assert positions == sorted(positions), kinds
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
    added = next(e for e in of_type(events, "conversation.item.added") if e["item"]["id"] == reply["id"])
    assert added["previous_item_id"] == user_item
    transcript = of_type(events, f"{TRANSCRIPTION}.completed")[0]
    assert transcript["item_id"] == user_item


async def test_the_reply_hears_the_conversation_so_far(edge: EdgeServer) -> None:
    """The second turn's response sees the first turn (as its transcript) and the first reply."""
    async with connect(edge) as conn:
        await opened(conn)
        for clip in (JFK_1, JFK_2):
            await send_paced(
                lambda audio: conn.input_audio_buffer.append(audio=audio), pcm16(build_recording([clip]).audio), 32000
            )
            await collect(conn.recv_bytes, count("response.done", 1))
        first, second = [], []
        await conn.send({"type": "response.create", "response": {"conversation": "none", "max_output_tokens": 1}})
        events = await collect(conn.recv_bytes, count("response.done", 1))
        first = of_type(events, "response.done")[0]["response"]
        await conn.send({"type": "response.create", "response": {"max_output_tokens": 1}})
        events = await collect(conn.recv_bytes, count("response.done", 1))
        second = of_type(events, "response.done")[0]["response"]
    # Outside the conversation the prompt is the instructions alone; inside, both turns and replies.
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"] + 20, (first, second)


async def test_cancel_ends_the_reply_and_aborts_its_request(edge: EdgeServer, vllm_url: str) -> None:
    """(New speech cutting a reply short is in test_realtime_extensions.py.)"""
    async with connect(edge) as conn:
        await opened(conn, max_output_tokens=4096)
        for _ in range(5):  # a random-weight model may end its reply before the cancel is read
            await conn.send({"type": "response.create"})
            created = await collect(conn.recv_bytes, count("response.created", 1))
            response_id = of_type(created, "response.created")[0]["response"]["id"]
            await conn.send({"type": "response.cancel", "response_id": response_id})
            done = of_type(await collect(conn.recv_bytes, count("response.done", 1)), "response.done")[0]["response"]
            assert done["id"] == response_id
            if done["status"] == "cancelled":
                assert done["status_details"]["reason"] == "client_cancelled"
                break
        else:
            raise AssertionError("every reply ended before its cancel")
        await conn.send({"type": "response.cancel", "event_id": "cancel-none"})
        error = (await collect(conn.recv_bytes, count("error", 1)))[-1]["error"]
        assert error["code"] == "response_cancel_not_active" and error["event_id"] == "cancel-none"
        await wait_until(lambda: vllm_requests_running(vllm_url) == 0)


async def test_one_response_at_a_time(edge: EdgeServer) -> None:
    async with connect(edge) as conn:
        await opened(conn, max_output_tokens=200)
        await conn.send({"type": "response.create"})
        await conn.send({"type": "response.create", "event_id": "second"})
        events = await collect(conn.recv_bytes, lambda seen: bool(of_type(seen, "error")))
        error = of_type(events, "error")[0]["error"]
        assert error["code"] == "conversation_already_has_active_response" and error["event_id"] == "second"
        await conn.send({"type": "response.cancel"})
        await collect(conn.recv_bytes, count("response.done", 1))


async def test_items_are_created_retrieved_and_deleted(edge: EdgeServer) -> None:
    async with connect(edge) as conn:
        await opened(conn)
        text = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there."}]}
        await conn.send({"type": "conversation.item.create", "item": {**text, "id": "item_hello"}})
        audio = {
            "type": "message",
            "role": "user",
            "content": [
                {
                    "type": "input_audio",
                    "audio": base64.b64encode(pcm16(build_recording([JFK_1]).audio)).decode(),
                }
            ],
        }
        await conn.send({"type": "conversation.item.create", "previous_item_id": "root", "item": audio})
        events = await collect(conn.recv_bytes, count("conversation.item.done", 2))
        added = of_type(events, "conversation.item.added")
        assert added[0]["item"]["id"] == "item_hello" and added[0]["previous_item_id"] is None
        assert added[0]["item"]["content"] == [{"type": "input_text", "text": "Hello there."}]
        audio_id = added[1]["item"]["id"]
        assert added[1]["previous_item_id"] is None  # first in the conversation
        await conn.send({"type": "conversation.item.retrieve", "item_id": "item_hello"})
        retrieved = (await collect(conn.recv_bytes, count("conversation.item.retrieved", 1)))[-1]
        assert retrieved["item"]["content"][0]["text"] == "Hello there."
        await conn.send({"type": "conversation.item.delete", "item_id": audio_id})
        deleted = (await collect(conn.recv_bytes, count("conversation.item.deleted", 1)))[-1]
        assert deleted["item_id"] == audio_id
        await conn.send({"type": "conversation.item.retrieve", "item_id": audio_id})
        error = (await collect(conn.recv_bytes, count("error", 1)))[-1]["error"]
        assert error["code"] == "item_not_found" and error["param"] == "item_id"
        await conn.send({"type": "conversation.item.create", "previous_item_id": "nope", "item": text})
        error = (await collect(conn.recv_bytes, count("error", 1)))[-1]["error"]
        assert error["param"] == "previous_item_id"
        # A response outside the conversation, with input of its own: its output joins nothing.
        await conn.send(
            {
                "type": "response.create",
                "response": {
                    "conversation": "none",
                    "metadata": {"topic": "side"},
                    "input": [{"type": "item_reference", "id": "item_hello"}, text],
                },
            }
        )
        events = await collect(conn.recv_bytes, count("response.done", 1))
        done = of_type(events, "response.done")[0]["response"]
        assert done["metadata"] == {"topic": "side"} and done["output"]
        assert not of_type(events, "conversation.item.added")


async def test_a_forced_tool_choice_calls_the_function_and_the_reply_goes_on(edge: EdgeServer) -> None:
    async with connect(edge) as conn:
        await opened(conn, tools=[WEATHER], tool_choice="auto", max_output_tokens=120)
        await conn.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            }
        )
        await conn.send(
            {"type": "response.create", "response": {"tool_choice": {"type": "function", "name": "get_weather"}}}
        )
        events = await collect(conn.recv_bytes, count("response.done", 1))
        done = of_type(events, "response.done")[0]["response"]
        assert done["status"] == "completed", done
        call = done["output"][0]
        assert call["type"] == "function_call" and call["name"] == "get_weather"
        arguments = json.loads(call["arguments"])
        assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("celsius", "fahrenheit")
        finished = of_type(events, "response.function_call_arguments.done")[0]
        assert finished["call_id"] == call["call_id"] and finished["arguments"] == call["arguments"]
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": '{"sky": "clear"}'}
        await conn.send({"type": "conversation.item.create", "item": output})
        await conn.send({"type": "response.create", "response": {"tool_choice": "none", "max_output_tokens": 4}})
        events = await collect(conn.recv_bytes, count("response.done", 1))
        reply = of_type(events, "response.done")[0]["response"]
        assert reply["status"] in ("completed", "incomplete") and reply["output"][0]["type"] == "message", reply


async def test_bad_events_and_tools_are_refused_by_field_and_the_session_goes_on(edge: EdgeServer) -> None:
    async with connect(edge) as conn:
        await opened(conn)
        bad_tool = {**WEATHER, "parameters": {"type": "object", "properties": {"city": {"type": 12}}}}
        cases = [
            ({"type": "session.update", "session": {"tools": [bad_tool]}}, "session.tools.0.parameters"),
            (
                {"type": "session.update", "session": {"tools": [{"type": "mcp", "server_label": "x"}]}},
                "session.tools.0.type",
            ),
            (
                {"type": "session.update", "session": {"tool_choice": {"type": "function", "name": "nope"}}},
                "session.tool_choice.name",
            ),
            ({"type": "session.update", "session": {"max_output_tokens": 0}}, "session.max_output_tokens"),
            (
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "output_text", "text": "x"}]},
                },
                "item",
            ),
            ({"type": "response.create", "response": {"tool_choice": "sometimes"}}, "response.tool_choice"),
            (
                {"type": "conversation.item.truncate", "item_id": "x", "content_index": 0, "audio_end_ms": -1},
                "audio_end_ms",
            ),
        ]
        for event, param in cases:
            await conn.send({**event, "event_id": "bad"})
            error = (await collect(conn.recv_bytes, count("error", 1)))[-1]["error"]
            assert error["event_id"] == "bad" and error["param"] and error["param"].startswith(param), (event, error)
        await conn.session.update(session={"output_modalities": ["audio"], "instructions": "Be kind."})
        events = await collect(conn.recv_bytes, count("session.updated", 1))
        assert of_type(events, "error")[0]["error"]["param"] == "session.output_modalities"
        shown = of_type(events, "session.updated")[0]["session"]
        assert shown["output_modalities"] == ["text"] and shown["instructions"] == "Be kind."
        await conn.send({"type": "response.create", "response": {"max_output_tokens": 2}})
        events = await collect(conn.recv_bytes, count("response.done", 1))
        assert of_type(events, "response.done")[0]["response"]["status"] in ("completed", "incomplete")


async def test_a_transcription_session_refuses_conversation_events(edge: EdgeServer) -> None:
    async with openai_client(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        await conn.send({"type": "response.create"})
        error = (await collect(conn.recv_bytes, count("error", 1)))[-1]["error"]
        assert error["param"] == "type" and "conversation sessions" in error["message"]


async def test_an_unknown_model_in_the_url_is_said_and_the_served_one_answers(edge: EdgeServer) -> None:
    async with openai_client(edge).realtime.connect(model="gpt-5-realtime-nonexistent") as conn:
        created = json.loads(await conn.recv_bytes())
        error = json.loads(await conn.recv_bytes())
    assert created["session"]["type"] == "realtime" and created["session"]["model"] == SERVED_NAME
    assert (
        error["type"] == "error" and error["error"]["code"] == "model_not_found" and error["error"]["param"] == "model"
    )


async def test_a_reply_hears_at_most_the_audios_voxtral_takes(edge: EdgeServer) -> None:
    """Voxtral takes at most 5 audios in a prompt: with seven audio items and no transcripts (items
    a client creates are not transcribed), the reply hears the newest five instead of failing."""
    clip = base64.b64encode(pcm16(build_recording([JFK_1], gap_s=0.1, lead_s=0.1).audio)).decode()
    async with connect(edge) as conn:
        await opened(conn)
        for _ in range(7):
            item = {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": clip}]}
            await conn.send({"type": "conversation.item.create", "item": item})
        await collect(conn.recv_bytes, count("conversation.item.done", 7))
        await conn.send({"type": "response.create", "response": {"max_output_tokens": 1}})
        done = of_type(await collect(conn.recv_bytes, count("response.done", 1)), "response.done")[0]["response"]
        assert done["status"] in ("completed", "incomplete"), done
        await conn.send({"type": "response.create", "response": {"max_output_tokens": 1, "conversation": "none"}})
        alone = of_type(await collect(conn.recv_bytes, count("response.done", 1)), "response.done")[0]["response"]
    # Five clips' audio tokens, not seven: Voxtral takes each audio as 30 s windows of 375 tokens.
    heard = done["usage"]["input_tokens"] - alone["usage"]["input_tokens"]
    assert 4.5 * 375 < heard < 5.5 * 375, (done["usage"], alone["usage"])
