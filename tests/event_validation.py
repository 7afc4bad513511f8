"""Pytest plugin: every OpenAI Realtime server event the edge sends during the tests must validate
against the `openai` SDK's own types, since clients built on them (the OpenAI Agents SDK, for one)
silently drop an event that does not.

The edges under test run in this process, so the plugin observes the product's one seam,
`server.realtime.protocols.openai_events.observers`, for the whole session: each message is validated (the
SDK's server-event union as a pydantic discriminated union, never its lenient `construct`) against
`openai.types.realtime` for a GA session, `openai.types.beta.realtime` for a beta one, both for an
`error` (the same in both). The exceptions are explicit: `UNKNOWN_TO_THE_SDK` (types not checked),
`CHECKED_AS` (types checked as another of the same shape) and `DEVIATIONS` (fields checked loosely),
each with its reason. An invalid event is recorded with the test running when it was sent, and that
test fails at teardown, naming the event and the validation error; one sent while no test runs (or
late in a test's teardown) fails the session. The simple `/ws` protocol is not OpenAI's: not checked.
"""

import copy
import json
import threading
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

import openai.types.beta.realtime as beta_types
import openai.types.realtime as ga_types
import pytest
from pydantic import Field, TypeAdapter, ValidationError

from server.realtime.protocols import openai_events
from server.realtime.protocols.openai_events import Flavour, Message

# Event types the SDK does not know, which are therefore not checked, and why each is sent.
UNKNOWN_TO_THE_SDK: dict[Flavour, dict[str, str]] = {
    "ga": {
        "conversation.item.input_audio_transcription.partial": "extension: live partial transcripts",
    },
    "beta": {
        "conversation.item.input_audio_transcription.partial": "extension: live partial transcripts",
    },
}
# Event types the SDK does not know, checked as one it knows of the same shape.
CHECKED_AS: dict[Flavour, dict[str, str]] = {
    "ga": {},
    "beta": {
        # OpenAI's beta opens a transcription session with it, but the SDK's beta union lacks it.
        "transcription_session.created": "transcription_session.updated",
    },
}
_SDK_UNIONS = {"ga": ga_types.RealtimeServerEvent, "beta": beta_types.RealtimeServerEvent}
_ABSENT = object()


@dataclass(frozen=True)
class Deviation:
    """A field where this edge necessarily differs from the SDK's types. The event is checked with
    an SDK-valid stand-in there, when the value sent passes `expected`, so that the rest of the
    event is still checked."""

    flavour: Flavour
    types: tuple[str, ...]
    path: tuple[str, ...]
    expected: Callable[[Any], bool]  # given the value sent, or `_ABSENT`
    stand_in: Any
    reason: str


DEVIATIONS = (
    Deviation(
        "ga",
        ("session.created", "session.updated"),
        ("session", "audio", "input", "format", "rate"),
        lambda rate: rate == 16000,
        24000,
        "extension: PCM at 16 kHz, which the SDK's `audio/pcm` type does not allow (24000 only)",
    ),
    Deviation(
        "beta",
        ("transcription_session.created", "transcription_session.updated"),
        ("session", "client_secret"),
        lambda secret: secret is _ABSENT,
        {"value": "", "expires_at": 0},
        "the SDK's beta session requires the `client_secret` a session minted over REST shows; "
        "a session's events carry none (nor do OpenAI's, nor could this edge's: it does not know the secret)",
    ),
    Deviation(
        "beta",
        ("transcription_session.created", "transcription_session.updated"),
        ("session", "input_audio_transcription", "model"),
        lambda model: isinstance(model, str),
        "whisper-1",
        "the SDK's beta type allows only OpenAI's models' names; the session shows the model it serves",
    ),
)


def _with_stand_ins(message: Message, flavour: Flavour) -> Message:
    """`message`, or a copy with the `DEVIATIONS` that apply to it replaced by their stand-ins."""
    checked = message
    for deviation in DEVIATIONS:
        if deviation.flavour != flavour or message.get("type") not in deviation.types:
            continue
        if checked is message:
            checked = copy.deepcopy(message)
        *parents, key = deviation.path
        node: Any = checked
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and deviation.expected(node.get(key, _ABSENT)):
            node[key] = deviation.stand_in
    return checked


@cache
def server_events(flavour: Flavour) -> TypeAdapter[Any]:
    """The SDK's server-event union, discriminated by `type` (the SDK marks it with its own
    metadata, which pydantic ignores: as a plain union an error would list every member)."""
    union = typing.get_args(_SDK_UNIONS[flavour])[0]
    return TypeAdapter(Annotated[union, Field(discriminator="type")])


def problems(message: Message, flavour: Flavour | None) -> list[str]:
    """Why `message` would not validate in a session of `flavour` (None: check both)."""
    found = []
    for each in ("ga", "beta") if flavour is None else (flavour,):
        kind = message.get("type")
        if kind in UNKNOWN_TO_THE_SDK[each]:
            continue
        checked = _with_stand_ins(message, each)
        if kind in CHECKED_AS[each]:
            checked = {**checked, "type": CHECKED_AS[each][kind]}
        try:
            server_events(each).validate_python(checked)
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            found.append(f"{each}: {details}")
    return found


@dataclass(frozen=True)
class InvalidEvent:
    test: str | None  # the node id of the test running when it was sent
    message: Message
    errors: list[str]

    def __str__(self) -> str:
        shown = json.dumps(self.message)
        shown = shown if len(shown) <= 500 else shown[:500] + "…"
        errors = ", ".join(self.errors)
        return f"{self.message.get('type')!r} does not validate against the openai SDK's types ({errors}): {shown}"


class EventCheck:
    """The session-wide observer; edges send from their own threads, hence the lock."""

    def __init__(self) -> None:
        self.running: str | None = None
        self.invalid: list[InvalidEvent] = []
        self.lock = threading.Lock()

    def observe(self, message: Message, flavour: Flavour | None) -> None:
        errors = problems(message, flavour)
        if errors:
            with self.lock:
                self.invalid.append(InvalidEvent(self.running, message, errors))

    def take(self, test: str | None) -> list[InvalidEvent]:
        """The invalid events sent while `test` ran, which are no longer kept."""
        with self.lock:
            taken = [event for event in self.invalid if event.test == test]
            self.invalid = [event for event in self.invalid if event.test != test]
        return taken


CHECK = EventCheck()


def pytest_configure(config: pytest.Config) -> None:
    openai_events.observers.append(CHECK.observe)


def pytest_unconfigure(config: pytest.Config) -> None:
    openai_events.observers.remove(CHECK.observe)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    CHECK.running = item.nodeid  # before any fixture of the test's is set up


def pytest_runtest_logfinish(nodeid: str) -> None:
    CHECK.running = None


@pytest.fixture(autouse=True)
def _server_events_validate(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    invalid = CHECK.take(request.node.nodeid)
    if invalid:
        pytest.fail("\n".join(map(str, invalid)), pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Events sent while no test ran, or late in a test's teardown, fail the session."""
    with CHECK.lock:
        late, CHECK.invalid = CHECK.invalid, []
    if late:
        lines = [f"{event.test or 'no test'}: {event}" for event in late]
        session.config.get_terminal_writer().line("Server events that do not validate:\n" + "\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
