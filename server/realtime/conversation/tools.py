"""Function tools between OpenAI's Realtime shape and vLLM's chat request.

`tool_choice: "auto"` is vLLM's own tool calling (its Mistral tool parser). A forced choice
(`"required"`, or one named function) is held by the edge itself: vLLM is asked for output
constrained to a JSON schema of `{"name": …, "arguments": …}` over the allowed functions
(structured outputs), which the edge turns into the function call. vLLM's own forced choice is
not used: see the README's tools section for why.

Mistral's tokenizer takes only tool call ids of nine letters and digits; a conversation's call ids
(OpenAI's `call_…`, or whatever a client sent) are mapped onto such ids, the same id to the same one.
"""

import hashlib
import json
import secrets
import string
from typing import Any

from server.realtime.config import FunctionTool, NamedFunction, ToolChoice

_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """A call id for a function call the model makes: OpenAI's prefix, Mistral's nine characters."""
    return "call_" + "".join(secrets.choice(_ALPHABET) for _ in range(9))


def mistral_call_id(call_id: str) -> str:
    """The nine-character id Mistral's tokenizer takes for `call_id`."""
    if call_id.startswith("call_") and len(call_id) == 14 and call_id[5:].isalnum():
        return call_id[5:]
    digest = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
    chars = []
    for _ in range(9):
        digest, index = divmod(digest, len(_ALPHABET))
        chars.append(_ALPHABET[index])
    return "".join(chars)


def chat_tools(tools: tuple[FunctionTool, ...]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description or "",
                "parameters": tool.parameters,
            },
        }
        for tool in tools
    ]


def forced(tools: tuple[FunctionTool, ...], choice: ToolChoice) -> tuple[FunctionTool, ...]:
    """The functions a forced choice allows (none: the choice is not forced)."""
    if isinstance(choice, NamedFunction):
        return tuple(tool for tool in tools if tool.name == choice.name)
    return tools if choice == "required" else ()


def call_schema(tools: tuple[FunctionTool, ...]) -> dict[str, Any]:
    """The JSON schema of one call of one of `tools`: `{"name": <const>, "arguments": <parameters>}`."""
    variants = [
        {
            "type": "object",
            "description": tool.description or tool.name,
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def parse_call(text: str, tools: tuple[FunctionTool, ...]) -> tuple[str, str]:
    """The (name, arguments JSON) of a forced call the model wrote; ValueError if it is not one.

    Structured output's grammar lets a model write control characters unescaped inside strings,
    which strict JSON refuses; they are read, and the arguments re-serialised with them escaped."""
    value = json.loads(text, strict=False)  # a raw control character in a string is still that string
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or "arguments" not in value:
        raise ValueError("not a function call object")
    if value["name"] not in {tool.name for tool in tools}:
        raise ValueError(f"unknown function {value['name']!r}")
    return value["name"], json.dumps(value["arguments"], separators=(",", ":"))
