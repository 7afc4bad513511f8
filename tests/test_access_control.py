"""Access control against a real vLLM: API keys on every `/v1` route and realtime socket (the OpenAI
SDK, plain HTTP, raw WebSockets), ephemeral `ek_` secrets, per-key metrics and the session cap.
"""

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import websockets
from realtime_helpers import (
    JFK_1,
    TRANSCRIPTION,
    VAD,
    build_recording,
    collect,
    count,
    pcm16,
    send_paced,
    wait_until,
    ws_url,
)

from server.api.services import Services
from server.core.auth import KeySessions
from server.core.settings import Settings
from tests.conftest import DATA, SERVED_MODEL, EdgeServer

ALICE = "sk-alice-0123456789abcdefghijkl"
BOB = "sk-bob-9876543210zyxwvutsrqpon"
SIGNING = "test-signing-secret-shared-by-edges"
WRONG = "sk-wrong-0123456789abcdefghijkl"


@pytest.fixture(scope="module")
def keyed(make_edge: Callable[..., EdgeServer], tmp_path_factory: pytest.TempPathFactory) -> EdgeServer:
    """An edge with two keys, one from `API_KEYS`, one named in `API_KEYS_FILE`."""
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text(f"# the team's keys\nbob:{BOB}\n\n")
    return make_edge(api_keys=f"alice:{ALICE}", api_keys_file=str(keys_file), ephemeral_secret_key=SIGNING)


def services_of(edge: EdgeServer) -> Services:
    found = edge.app.state.services
    assert isinstance(found, Services)
    return found


def sdk(edge: EdgeServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{edge.url}/v1", api_key=key, max_retries=0)


def sdk_without_key(edge: EdgeServer) -> openai.OpenAI:
    """The SDK sending no key: its Authorization header is empty."""
    return openai.OpenAI(
        base_url=f"{edge.url}/v1", api_key="unused", max_retries=0, default_headers={"Authorization": ""}
    )


ROUTE_CALLS: list[Callable[[openai.OpenAI], object]] = [
    lambda c: c.models.list(),
    lambda c: c.models.retrieve("whisper-1"),
    lambda c: c.audio.transcriptions.create(model="whisper-1", file=("a.mp3", (DATA / "silero_test.mp3").read_bytes())),
    lambda c: c.audio.translations.create(model="whisper-1", file=("a.mp3", (DATA / "silero_test.mp3").read_bytes())),
    lambda c: c.chat.completions.create(
        model="voxtral", messages=[{"role": "user", "content": "Hello"}], max_completion_tokens=2
    ),
    lambda c: c.post("/realtime/client_secrets", body={}, cast_to=object),
    lambda c: c.post("/realtime/transcription_sessions", body={}, cast_to=object),
]
ROUTE_IDS = ["models", "model", "transcriptions", "translations", "chat", "client_secrets", "transcription_sessions"]


def assert_invalid_api_key(exc: openai.AuthenticationError, key: str | None) -> None:
    assert exc.status_code == 401
    body = exc.response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_api_key"
    assert error["param"] is None
    if key is None:
        assert error["message"].startswith("You didn't provide an API key.")
    else:
        assert error["message"].startswith("Incorrect API key provided: ")
        assert key not in error["message"] and key[3:-3] not in error["message"]


@pytest.mark.parametrize("call", ROUTE_CALLS, ids=ROUTE_IDS)
def test_every_v1_route_refuses_no_key_and_a_wrong_key_and_serves_a_right_one(
    keyed: EdgeServer, call: Callable[[openai.OpenAI], object]
) -> None:
    with pytest.raises(openai.AuthenticationError) as missing:
        call(sdk_without_key(keyed))
    assert_invalid_api_key(missing.value, None)
    with pytest.raises(openai.AuthenticationError) as wrong:
        call(sdk(keyed, WRONG))
    assert_invalid_api_key(wrong.value, WRONG)
    assert call(sdk(keyed, ALICE)) is not None
    assert call(sdk(keyed, BOB)) is not None


def test_every_v1_http_route_is_declared_and_enforced(keyed: EdgeServer) -> None:
    """Whatever `/v1` HTTP route exists (also one added later) shows the bearer scheme and refuses no key."""
    schema = httpx.get(f"{keyed.url}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["APIKey"]["scheme"] == "bearer"
    operations = [
        (method, path)
        for path, item in schema["paths"].items()
        if path.startswith("/v1")
        for method, operation in item.items()
        if operation.get("security") == [{"APIKey": []}] or pytest.fail(f"{method} {path} declares no key")
    ]
    assert len(operations) >= len(ROUTE_IDS)
    for method, path in operations:
        r = httpx.request(method, keyed.url + path.replace("{model_id}", "whisper-1"), timeout=30)
        assert r.status_code == 401, (method, path)
    assert [p for p in schema["paths"] if not p.startswith("/v1")] == ["/health", "/ready", "/metrics"]


def test_an_open_edge_on_a_public_address_warns(
    make_edge: Callable[..., EdgeServer], caplog: pytest.LogCaptureFixture
) -> None:
    make_edge(host="0.0.0.0")  # the settings say a public address (the test server binds loopback)
    make_edge(host="0.0.0.0", api_keys=ALICE)
    make_edge(host="127.0.0.1")
    warnings = [r.getMessage() for r in caplog.records if "without API keys" in r.getMessage()]
    assert warnings == ["the edge listens on 0.0.0.0 without API keys: anyone who reaches it can use it (set API_KEYS)"]


def test_open_routes_stay_open(keyed: EdgeServer) -> None:
    for path in ("/health", "/ready", "/", "/ui/styles.css", "/ui/js/main.js", "/metrics"):
        assert httpx.get(f"{keyed.url}{path}", timeout=30).status_code == 200, path


def test_metrics_need_a_key_when_asked(make_edge: Callable[..., EdgeServer]) -> None:
    edge = make_edge(api_keys=ALICE, metrics_require_key=True)
    assert httpx.get(f"{edge.url}/metrics").status_code == 401
    assert httpx.get(f"{edge.url}/metrics", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 200
    assert httpx.get(f"{edge.url}/health").status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Basic " + base64.b64encode(f"user:{ALICE}".encode()).decode(),
        f"Token {ALICE}",
        f"Bearer {ALICE} extra",
        f"Bearer {ALICE[:-1]}",
        "Bearer " + "k" * 10_240,
        "Bearer ek_",
        "Bearer ek_e30.AAAA",
    ],
    ids=["no-token", "basic", "other-scheme", "trailing", "one-char-short", "10kB", "ek-empty", "ek-forged"],
)
def test_malformed_authorization_is_a_401_and_the_service_stays_healthy(keyed: EdgeServer, header: str) -> None:
    r = httpx.get(f"{keyed.url}/v1/models", headers={"Authorization": header}, timeout=30)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["www-authenticate"] == "Bearer"
    assert "k" * 100 not in r.text
    assert httpx.get(f"{keyed.url}/health").status_code == 200


def test_non_ascii_authorization_is_a_401(keyed: EdgeServer) -> None:
    r = httpx.get(f"{keyed.url}/v1/models", headers=[(b"Authorization", "Bearer clé-ü".encode("latin-1"))])
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_bearer_scheme_is_case_insensitive(keyed: EdgeServer) -> None:
    assert httpx.get(f"{keyed.url}/v1/models", headers={"Authorization": f"bearer {ALICE}"}).status_code == 200


def test_an_empty_key_in_the_settings_is_refused_at_start(tmp_path: Any) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("carol:\n")
    from server.core.auth import parse_keys

    with pytest.raises(ValueError, match="empty"):
        parse_keys(Settings(_env_file=None, api_keys_file=str(keys_file)))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="cannot be read"):
        parse_keys(Settings(_env_file=None, api_keys_file=str(tmp_path / "missing.txt")))  # type: ignore[call-arg]
    empty_entries = Settings(_env_file=None, api_keys=" , ,")  # type: ignore[call-arg]
    assert parse_keys(empty_entries) == {}


def metric(text: str, name: str, key: str) -> float:
    match = re.search(rf'^{name}{{key="{key}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_usage_is_counted_by_key_name_never_the_key(keyed: EdgeServer) -> None:
    before = httpx.get(f"{keyed.url}/metrics").text
    with open(DATA / "jfk.flac", "rb") as f:
        sdk(keyed, BOB).audio.transcriptions.create(model="whisper-1", file=f)
    sdk(keyed, BOB).models.list()
    after = httpx.get(f"{keyed.url}/metrics").text
    assert metric(after, "edge_key_requests_total", "bob") == metric(before, "edge_key_requests_total", "bob") + 2
    jfk_s = 11.0
    gained = metric(after, "edge_key_audio_seconds_total", "bob") - metric(
        before, "edge_key_audio_seconds_total", "bob"
    )
    assert abs(gained - jfk_s) < 0.5
    assert ALICE not in after and BOB not in after


# Realtime sockets


def realtime_url(edge: EdgeServer, base: str | None = None) -> str:
    return f"{base or ws_url(edge)}/v1/realtime?intent=transcription"


async def assert_refused(url: str, **options: Any) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, **options):
            pass
    assert refused.value.response.status_code == 403


async def test_sdk_realtime_refuses_a_wrong_key_and_serves_a_right_one(keyed: EdgeServer) -> None:
    def client(key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=key, base_url=f"{keyed.url}/v1", websocket_base_url=f"{ws_url(keyed)}/v1")

    with pytest.raises(websockets.InvalidStatus) as refused:
        async with client(WRONG).realtime.connect(extra_query={"intent": "transcription"}):
            pass
    assert refused.value.response.status_code == 403

    recording = build_recording([JFK_1])
    async with client(ALICE).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.session.update(
            session={"type": "transcription", "audio": {"input": {"turn_detection": VAD}}},
        )
        assert (await conn.recv()).type == "session.updated"
        await send_paced(lambda a: conn.input_audio_buffer.append(audio=a), pcm16(recording.audio, 24000), 48000)
        events = await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", 1))
    assert len([e for e in events if e["type"] == f"{TRANSCRIPTION}.completed"]) == 1


@pytest.mark.parametrize("path", ["/v1/realtime", "/ws"])
async def test_sockets_refuse_missing_and_wrong_keys_before_any_session(keyed: EdgeServer, path: str) -> None:
    url = f"{ws_url(keyed)}{path}"
    await assert_refused(url)
    await assert_refused(url, additional_headers={"Authorization": f"Bearer {WRONG}"})
    await assert_refused(url, subprotocols=["realtime", f"openai-insecure-api-key.{WRONG}"])
    await assert_refused(f"{url}?api_key={ALICE}")  # never a key in the query string
    await assert_refused(url, additional_headers={"Authorization": "Bearer " + "k" * 7_000})
    # Above 8 kB a header line is beyond what uvicorn's WebSocket handshake parses: it never answers.
    with pytest.raises((websockets.InvalidStatus, TimeoutError)):
        async with websockets.connect(
            url, additional_headers={"Authorization": "Bearer " + "k" * 10_240}, open_timeout=3
        ):
            pass
    await assert_refused(url, subprotocols=["realtime", "openai-insecure-api-key."])
    assert (await asyncio.to_thread(httpx.get, f"{keyed.url}/health")).status_code == 200


async def test_simple_ws_takes_the_key_as_a_header_and_counts_its_audio(keyed: EdgeServer) -> None:
    recording = build_recording([JFK_1])
    before = (await asyncio.to_thread(httpx.get, f"{keyed.url}/metrics")).text
    async with websockets.connect(
        f"{ws_url(keyed)}/ws", additional_headers={"Authorization": f"Bearer {BOB}"}
    ) as socket:
        await send_paced(lambda a: socket.send(json.dumps({"type": "audio", "data": a})), pcm16(recording.audio), 32000)
        events = await collect(socket.recv, count("transcription", 1))
        assert events[-1]["type"] == "transcription"
        # An eager final can reach the client before the session has applied the trailing
        # silence's messages (and a session the client closes drops what it has not applied), so
        # the count is awaited, bounded, with the connection open.
        sent_s = len(recording.audio) / 16000
        deadline = time.monotonic() + 10
        while True:
            after = (await asyncio.to_thread(httpx.get, f"{keyed.url}/metrics")).text
            received = metric(after, "edge_key_audio_seconds_total", "bob") - metric(
                before, "edge_key_audio_seconds_total", "bob"
            )
            if abs(received - sent_s) < 0.01 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    assert abs(received - sent_s) < 0.01
    sessions = "edge_key_realtime_sessions_total"
    assert metric(after, sessions, "bob") == metric(before, sessions, "bob") + 1


async def test_browser_subprotocol_key_selects_realtime(keyed: EdgeServer) -> None:
    async with websockets.connect(
        realtime_url(keyed), subprotocols=["realtime", f"openai-insecure-api-key.{ALICE}"]
    ) as socket:
        assert socket.subprotocol == "realtime"
        created = json.loads(await socket.recv())
    assert created["type"] == "session.created"


# Ephemeral client secrets


MINTED_SESSION = {
    "type": "transcription",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 16000},
            "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
        }
    },
}


def mint(edge: EdgeServer, key: str = ALICE, **body: Any) -> dict[str, Any]:
    return sdk(edge, key).post("/realtime/client_secrets", body=body, cast_to=object)  # type: ignore[no-any-return]


async def test_ephemeral_secret_opens_a_session_with_its_config(keyed: EdgeServer) -> None:
    minted = mint(keyed, session=MINTED_SESSION)
    assert minted["value"].startswith("ek_")
    assert minted["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    async with websockets.connect(
        realtime_url(keyed), subprotocols=["realtime", f"openai-insecure-api-key.{minted['value']}"]
    ) as socket:
        created = json.loads(await socket.recv())
    audio_input = created["session"]["audio"]["input"]
    assert audio_input["format"] == {"type": "audio/pcm", "rate": 16000}
    assert audio_input["transcription"]["language"] == "en"
    assert audio_input["turn_detection"]["silence_duration_ms"] == 700


def test_ephemeral_secret_lifetime_and_bounds(keyed: EdgeServer) -> None:
    default = mint(keyed)
    assert abs(default["expires_at"] - (time.time() + 600)) < 30
    short = mint(keyed, expires_after={"anchor": "created_at", "seconds": 10})
    assert abs(short["expires_at"] - (time.time() + 10)) < 30
    for seconds in (9, 7201, "soon"):
        with pytest.raises(openai.UnprocessableEntityError):
            mint(keyed, expires_after={"anchor": "created_at", "seconds": seconds})
    with pytest.raises(openai.BadRequestError) as bad:
        mint(keyed, session={"type": "translation"})
    assert bad.value.response.json()["error"]["param"] == "session.type"
    assert mint(keyed, session={"type": "realtime"})["session"]["type"] == "realtime"  # a conversation session
    with pytest.raises(openai.NotFoundError):
        mint(keyed, session={"type": "transcription", "audio": {"input": {"transcription": {"model": "nope"}}}})


def test_ephemeral_secret_is_refused_on_http_routes(keyed: EdgeServer) -> None:
    secret = mint(keyed)["value"]
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(keyed, secret).models.list()
    assert refused.value.response.json()["error"]["code"] == "invalid_api_key"
    assert "realtime sessions only" in refused.value.response.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):  # nor can it mint another
        mint(keyed, key=secret)


async def test_forged_and_tampered_secrets_are_refused(keyed: EdgeServer, make_edge: Callable[..., EdgeServer]) -> None:
    secret = mint(keyed)["value"]
    payload, signature = secret[3:].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["e"] += 86_400
    longer = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for bad in (f"ek_{longer}.{signature}", f"ek_{payload}.{flipped}", f"ek_{payload}", "ek_" + "A" * 7_000):
        await assert_refused(realtime_url(keyed), additional_headers={"Authorization": f"Bearer {bad}"})
    # Signed with another edge's secret: refused; with the same EPHEMERAL_SECRET_KEY: accepted anywhere.
    stranger = make_edge(api_keys=ALICE)
    await assert_refused(realtime_url(stranger), additional_headers={"Authorization": f"Bearer {secret}"})
    sibling = make_edge(api_keys=ALICE, ephemeral_secret_key=SIGNING)
    async with websockets.connect(
        realtime_url(sibling), additional_headers={"Authorization": f"Bearer {secret}"}
    ) as socket:
        assert json.loads(await socket.recv())["type"] == "session.created"
    assert (await asyncio.to_thread(httpx.get, f"{keyed.url}/health")).status_code == 200


async def test_ephemeral_secret_is_refused_after_it_expires(keyed: EdgeServer) -> None:
    minted = mint(keyed, expires_after={"anchor": "created_at", "seconds": 10})
    headers = {"Authorization": f"Bearer {minted['value']}"}
    async with websockets.connect(realtime_url(keyed), additional_headers=headers) as socket:
        assert json.loads(await socket.recv())["type"] == "session.created"
    await asyncio.sleep(max(0.0, minted["expires_at"] + 1 - time.time()))
    await assert_refused(realtime_url(keyed), additional_headers=headers)


async def test_beta_transcription_session_secret(keyed: EdgeServer) -> None:
    answer = sdk(keyed, BOB).post(
        "/realtime/transcription_sessions",
        body={"input_audio_format": "g711_ulaw", "input_audio_transcription": {"language": "fr"}},
        cast_to=object,
    )
    assert isinstance(answer, dict)
    assert answer["input_audio_format"] == "g711_ulaw"
    secret = answer["client_secret"]
    assert secret["value"].startswith("ek_") and isinstance(secret["expires_at"], int)
    async with websockets.connect(
        f"{ws_url(keyed)}/v1/realtime",
        subprotocols=["realtime", "openai-beta.realtime-v1", f"openai-insecure-api-key.{secret['value']}"],
    ) as socket:
        created = json.loads(await socket.recv())
    assert created["type"] == "transcription_session.created"
    assert created["session"]["input_audio_format"] == "g711_ulaw"
    assert created["session"]["input_audio_transcription"]["language"] == "fr"
    assert created["session"]["input_audio_transcription"]["model"] == SERVED_MODEL


def test_key_session_caps_hold_across_workers(tmp_path: Path) -> None:
    """With several workers (a shared directory), a key's cap counts every worker's sessions."""
    worker_a, worker_b = KeySessions(1, tmp_path), KeySessions(1, tmp_path)
    assert worker_a.try_acquire("alice")
    assert not worker_b.try_acquire("alice")
    assert worker_b.try_acquire("bob")
    worker_a.release("alice")
    assert worker_b.try_acquire("alice")
    assert KeySessions(None, tmp_path).try_acquire("alice")  # no cap: nothing counted


async def test_sessions_per_key_are_capped(
    make_edge: Callable[..., EdgeServer], caplog: pytest.LogCaptureFixture
) -> None:
    edge = make_edge(api_keys=f"alice:{ALICE},bob:{BOB}", api_key_max_sessions=1)
    alice = {"Authorization": f"Bearer {ALICE}"}
    async with websockets.connect(realtime_url(edge), additional_headers=alice) as first:
        assert json.loads(await first.recv())["type"] == "session.created"
        async with websockets.connect(realtime_url(edge), additional_headers=alice) as second:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await second.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert "for this key (at most 1)" in closed.value.rcvd.reason
        assert any(
            "refusing a realtime session" in r.getMessage() and "(key alice)" in r.getMessage() for r in caplog.records
        )
        async with websockets.connect(
            realtime_url(edge), additional_headers={"Authorization": f"Bearer {BOB}"}
        ) as other:
            assert json.loads(await other.recv())["type"] == "session.created"
    await wait_until(lambda: not services_of(edge).keys.sessions.open)
    async with websockets.connect(realtime_url(edge), additional_headers=alice) as again:
        assert json.loads(await again.recv())["type"] == "session.created"
    text = (await asyncio.to_thread(httpx.get, f"{edge.url}/metrics")).text
    assert metric(text, "edge_key_realtime_sessions_total", "alice") >= 2
