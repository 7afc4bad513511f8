"""The chat request for a response: the conversation's items as vLLM chat messages, within the
model's context.

What each item becomes:
- a user message: its text parts as text; its audio as audio for the latest `audio_turns` audio
  turns (Voxtral hears them), earlier ones as their transcripts (a tenth of the tokens, and the
  words are what carries the conversation on); a turn whose transcript has not come yet goes as
  audio while its audio is kept;
  Voxtral takes at most `MAX_AUDIOS` audios in one prompt (vLLM refuses more): the newest audio
  parts go as audio, older ones as their transcripts, or not at all while they have none;
- an assistant message: its text; function calls: an assistant message with `tool_calls`, and each
  `function_call_output` a `tool` message (Mistral's call ids, see `tools`);
- a system message: its text joins the instructions.

Voxtral's tokenizer refuses a system prompt next to audio, so the instructions (and system
messages) travel as a text part of the last user message, ahead of its content. Mistral's chat
template wants the last message to be the user's or a tool's: a conversation that ends with the
assistant's own message gets a user message with the instructions (or a bare "Continue.").

The context: the prompt is estimated (audio at Voxtral's 12.5 tokens a second in 30 s chunks,
text at 3 bytes a token, both on the safe side) and the oldest messages are left out until it fits
in `context_tokens` less the tokens kept for the reply; a function call and its outputs go or stay
together. A conversation whose newest message alone does not fit is refused.
"""

import base64
import math
from dataclasses import dataclass
from typing import Any

from server.core.audio import encode_wav
from server.core.errors import APIError
from server.realtime.config import FunctionTool, ToolChoice
from server.realtime.conversation.items import FunctionCall, FunctionCallOutput, InputAudio, Item, Message
from server.realtime.conversation.tools import call_schema, chat_tools, forced, mistral_call_id

AUDIO_CHUNK_S = 30
AUDIO_TOKENS_PER_CHUNK = 375  # Voxtral: 12.5 tokens a second
TEXT_BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 8
MAX_AUDIOS = 5  # vLLM's Voxtral: `get_supported_mm_limits`, not raised by `--limit-mm-per-prompt`

ChatMessage = dict[str, Any]


@dataclass(frozen=True)
class PromptSettings:
    instructions: str | None
    tools: tuple[FunctionTool, ...]
    tool_choice: ToolChoice
    max_output_tokens: int
    context_tokens: int | None
    audio_turns: int


@dataclass(frozen=True)
class ChatRequest:
    """The chat body (model filled in by the caller) and the functions a forced call is among."""

    body: dict[str, Any]
    forced_tools: tuple[FunctionTool, ...]
    dropped_items: int  # items left out of the prompt for the context


def chat_request(items: list[Item], settings: PromptSettings) -> ChatRequest:
    system = [item.text() for item in items if isinstance(item, Message) and item.role == "system"]
    instructions = "\n\n".join(text for text in [settings.instructions or "", *system] if text)
    groups = _message_groups(
        [item for item in items if not (isinstance(item, Message) and item.role == "system")], settings
    )
    budget = None if settings.context_tokens is None else settings.context_tokens - settings.max_output_tokens
    kept, dropped = _within(groups, budget, instructions)
    messages = [message for group in kept for message in group.messages]
    messages = _with_instructions(_merged(messages), instructions)
    body: dict[str, Any] = {"messages": messages, "max_completion_tokens": settings.max_output_tokens}
    forced_tools = forced(settings.tools, settings.tool_choice)
    if forced_tools:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "function_call", "schema": call_schema(forced_tools), "strict": True},
        }
    elif settings.tools and settings.tool_choice == "auto":
        body["tools"] = chat_tools(settings.tools)
        body["tool_choice"] = "auto"
    return ChatRequest(body, forced_tools, dropped)


@dataclass(frozen=True)
class _Group:
    """Messages that go or stay together, with their estimated tokens."""

    messages: list[ChatMessage]
    tokens: int


def _message_groups(items: list[Item], settings: PromptSettings) -> list[_Group]:
    audio_ids = [
        item.id
        for item in items
        if isinstance(item, Message) and any(isinstance(p, InputAudio) and p.samples is not None for p in item.content)
    ]
    as_audio = _audio_parts(items, set(audio_ids[-settings.audio_turns :]) if settings.audio_turns else set())
    groups: list[_Group] = []
    calls: list[ChatMessage] = []
    for item in items:
        if isinstance(item, FunctionCallOutput):
            message = {"role": "tool", "tool_call_id": mistral_call_id(item.call_id), "content": item.output}
            if groups and groups[-1].messages[0].get("tool_calls"):
                last = groups[-1]
                groups[-1] = _Group([*last.messages, message], last.tokens + _text_tokens(item.output))
            # An output whose call is not in the conversation has nothing to answer: left out.
            continue
        if isinstance(item, FunctionCall):
            call = {
                "id": mistral_call_id(item.call_id),
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments or "{}"},
            }
            if groups and groups[-1].messages[-1].get("tool_calls") is calls and calls:
                calls.append(call)
                last = groups[-1]
                groups[-1] = _Group(last.messages, last.tokens + _text_tokens(item.arguments))
            else:
                calls = [call]
                groups.append(
                    _Group([{"role": "assistant", "content": None, "tool_calls": calls}], _text_tokens(item.arguments))
                )
            continue
        content, tokens = _content(item, as_audio)
        if content:
            groups.append(_Group([{"role": item.role, "content": content}], tokens))
    return groups


def _audio_parts(items: list[Item], audio_turns: set[str]) -> set[int]:
    """The audio parts (by `id()`) that go as audio: those of the `audio_turns` items and those
    with no transcript yet, newest first, at most `MAX_AUDIOS`."""
    chosen: set[int] = set()
    for item in reversed(items):
        if not isinstance(item, Message):
            continue
        for part in reversed(item.content):
            if len(chosen) == MAX_AUDIOS:
                return chosen
            if isinstance(part, InputAudio) and part.samples is not None:
                if item.id in audio_turns or part.transcript is None:
                    chosen.add(id(part))
    return chosen


def _content(message: Message, as_audio: set[int]) -> tuple[list[dict[str, Any]] | str, int]:
    if message.role == "assistant":
        text = message.text()
        return text, _text_tokens(text)
    parts: list[dict[str, Any]] = []
    tokens = MESSAGE_OVERHEAD_TOKENS
    for part in message.content:
        if isinstance(part, InputAudio):
            samples = part.float_samples()
            if samples is not None and id(part) in as_audio:
                wav = base64.b64encode(encode_wav(samples)).decode()
                parts.append({"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}})
                tokens += math.ceil(max(part.duration_ms, 1) / 1000 / AUDIO_CHUNK_S) * AUDIO_TOKENS_PER_CHUNK
            elif part.transcript:
                parts.append({"type": "text", "text": part.transcript})
                tokens += _text_tokens(part.transcript)
        elif part.text:
            parts.append({"type": "text", "text": part.text})
            tokens += _text_tokens(part.text)
    return parts, tokens


def _text_tokens(text: str | None) -> int:
    return MESSAGE_OVERHEAD_TOKENS + math.ceil(len((text or "").encode()) / TEXT_BYTES_PER_TOKEN)


def _within(groups: list[_Group], budget: int | None, instructions: str) -> tuple[list[_Group], int]:
    """The newest groups that fit in `budget`, and how many were left out; leading assistant
    messages are left out too (a prompt opens with the user)."""
    kept = list(groups)
    dropped = 0
    if budget is not None:
        total = _text_tokens(instructions) + sum(group.tokens for group in kept)
        while kept and total > budget:
            if len(kept) == 1:
                raise APIError(
                    400,
                    f"The conversation's newest message does not fit in the model's context of about {budget} tokens "
                    "(less the reply's). Send less at once, or lower `max_output_tokens`.",
                    param="max_output_tokens",
                    code="context_length_exceeded",
                )
            total -= kept.pop(0).tokens
            dropped += 1
    while kept and kept[0].messages[0]["role"] != "user":
        kept.pop(0)
        dropped += 1
    return kept, dropped


def _merged(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Consecutive user messages as one (their parts in order), and consecutive assistant texts."""
    merged: list[ChatMessage] = []
    for message in messages:
        last = merged[-1] if merged else None
        if last is not None and last["role"] == message["role"] == "user":
            merged[-1] = {"role": "user", "content": [*last["content"], *message["content"]]}
        elif (
            last is not None
            and last["role"] == message["role"] == "assistant"
            and not last.get("tool_calls")
            and not message.get("tool_calls")
        ):
            merged[-1] = {"role": "assistant", "content": f"{last['content']}\n{message['content']}"}
        else:
            merged.append(message)
    return merged


def _with_instructions(messages: list[ChatMessage], instructions: str) -> list[ChatMessage]:
    if not messages or messages[-1]["role"] == "assistant":
        return [*messages, {"role": "user", "content": [{"type": "text", "text": instructions or "Continue."}]}]
    if not instructions:
        return messages
    last_user = max(i for i, message in enumerate(messages) if message["role"] == "user")
    user = messages[last_user]
    with_text = {"role": "user", "content": [{"type": "text", "text": instructions}, *user["content"]]}
    return [*messages[:last_user], with_text, *messages[last_user + 1 :]]
