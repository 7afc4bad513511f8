"""A minted client secret's session is the session its socket opens: the id and config shown when
the secret is minted (over HTTP) are those `session.created` shows when the `openai` SDK's realtime
client connects with the `ek_` secret. Against a real edge and the session's real vLLM."""

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from realtime_helpers import ws_url

from tests.conftest import EdgeServer

KEY = "sk-minter-0123456789abcdefghijkl"
GA_SESSION = {
    "type": "transcription",
    "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"silence_duration_ms": 800}}},
}


@pytest.fixture(scope="module")
def keyed(make_edge: Callable[..., EdgeServer]) -> EdgeServer:
    return make_edge(api_keys=f"minter:{KEY}")


def minted(edge: EdgeServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    client = openai.OpenAI(base_url=f"{edge.url}/v1", api_key=KEY, max_retries=0)
    answer = client.post(path, body=body, cast_to=object)
    assert isinstance(answer, dict)
    return answer


def realtime_client(edge: EdgeServer, secret: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=secret, base_url=f"{edge.url}/v1", websocket_base_url=f"{ws_url(edge)}/v1")


async def test_a_ga_secret_opens_the_session_it_showed(keyed: EdgeServer) -> None:
    answer = minted(keyed, "/realtime/client_secrets", {"session": GA_SESSION})
    shown = answer["session"]
    assert answer["value"].startswith("ek_") and shown["id"].startswith("sess_")
    client = realtime_client(keyed, answer["value"])
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = json.loads(await conn.recv_bytes())
    assert created["type"] == "session.created"
    opened = created["session"]
    assert opened["id"] == shown["id"]
    assert opened["audio"]["input"]["format"] == shown["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert opened["audio"]["input"]["turn_detection"] == shown["audio"]["input"]["turn_detection"]


async def test_a_beta_secret_opens_the_session_it_showed(keyed: EdgeServer) -> None:
    shown = minted(keyed, "/realtime/transcription_sessions", {"input_audio_format": "g711_alaw"})
    client = realtime_client(keyed, shown["client_secret"]["value"])
    async with client.beta.realtime.connect(model="gpt-4o-transcribe", extra_query={"intent": "transcription"}) as conn:
        created = json.loads(await conn.recv_bytes())
    assert created["type"] == "transcription_session.created"
    opened = created["session"]
    assert opened["id"] == shown["id"]
    assert opened["input_audio_format"] == shown["input_audio_format"] == "g711_alaw"
