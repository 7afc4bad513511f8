"""The turn engine on its own, with a scripted stand-in for vLLM's client, named as such: it makes
what a real vLLM cannot be made to do on demand (a later turn answered before an earlier one, a
transcription that fails, one still running when the session closes), to check item order,
partials, discards, failures and close. The sessions built on it are tested against the real vLLM
elsewhere (`test_realtime_*`)."""

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

import numpy as np
import pytest
from prometheus_client import REGISTRY

from server.backend.model_names import ModelNames
from server.backend.vllm_client import TranscriptionResult, VLLMClient
from server.core.errors import APIError
from server.core.usage import StreamUsage
from server.realtime.audio_buffer import AudioBuffer
from server.realtime.config import SessionConfig, Transcription
from server.realtime.events import Event, TranscriptCompleted, TranscriptDelta, TranscriptFailed, TranscriptPartial
from server.realtime.turn_engine import TurnEngine

SECOND = 16000


class FakeBackend:
    """Answers each transcription with the words of `script`, in turn; a word "fail" raises."""

    def __init__(self, script: list[tuple[float, list[str]]]) -> None:
        self.script = script
        self.partial_requests = 0
        self.cancelled = 0
        self.sent_ms: list[int] = []  # each transcription's audio, in ms

    async def transcribe_stream(
        self, wav: bytes, *, task: str, model: str, language: str | None, temperature: float, usage: StreamUsage
    ) -> AsyncGenerator[str, None]:
        self.sent_ms.append((len(wav) - 44) // 2 * 1000 // SECOND)
        delay, words = self.script.pop(0)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        for word in words:
            if word == "fail":
                raise APIError(502, "vLLM broke.", code="backend_error")
            yield word

    async def transcribe(
        self, wav: bytes, *, task: str, model: str, language: str | None, temperature: float
    ) -> TranscriptionResult:
        self.partial_requests += 1
        return TranscriptionResult(text=f"partial {self.partial_requests}")


class FakeModels:
    async def resolve(self, requested: str | None) -> str:
        return "voxtral"


class Harness:
    def __init__(self, backend: FakeBackend, config: SessionConfig | None = None) -> None:
        self.buffer = AudioBuffer()
        self.config = config or SessionConfig()
        self.events: list[Event] = []
        self.done: list[tuple[TranscriptCompleted | TranscriptFailed, int]] = []
        self.engine = TurnEngine(
            self.buffer,
            lambda: self.config,
            backend=cast(VLLMClient, backend),
            models=cast(ModelNames, FakeModels()),
            emit=self.events.append,
            on_turn_done=lambda event: self.done.append((event, len(self.events))),
        )

    def hear(self, seconds: float) -> None:
        samples = np.zeros(int(seconds * SECOND), dtype=np.float32)
        self.buffer.append(samples)
        self.engine.append(samples)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


async def test_items_are_released_in_order_and_reported_once_emitted(caplog: pytest.LogCaptureFixture) -> None:
    backend = FakeBackend([(0.3, ["slow ", "first"]), (0.0, ["quick"])])
    harness = Harness(backend)
    harness.engine.start_item("item_a", 0)
    harness.hear(1)
    harness.engine.end_item(SECOND)
    harness.engine.start_item("item_b", SECOND)
    harness.hear(0.5)
    harness.engine.end_item(SECOND + SECOND // 2)
    with caplog.at_level(logging.INFO, logger="edge.realtime"):
        await wait_for(lambda: len(harness.done) == 2)
    assert [(type(e).__name__, e.item_id) for e in harness.events] == [
        ("TranscriptDelta", "item_a"),
        ("TranscriptDelta", "item_a"),
        ("TranscriptCompleted", "item_a"),
        ("TranscriptDelta", "item_b"),
        ("TranscriptCompleted", "item_b"),
    ]
    first, second = harness.of(TranscriptCompleted)
    assert (first.transcript, first.audio_start_ms, first.audio_end_ms) == ("slow first", 0, 1000)
    assert (second.transcript, second.audio_start_ms, second.audio_end_ms) == ("quick", 1000, 1500)
    # Each final event is reported right after it is emitted.
    assert harness.done == [(first, 3), (second, 5)]
    assert [r.getMessage().split(":")[0] for r in caplog.records if "stopped→done" in r.getMessage()] == [
        "realtime turn item_a completed",
        "realtime turn item_b completed",
    ]
    await harness.engine.aclose()


async def test_a_failed_transcription_is_a_failed_turn() -> None:
    harness = Harness(FakeBackend([(0.0, ["half ", "fail"])]))
    harness.engine.start_item("item_a", 0)
    harness.hear(1)
    harness.engine.end_item(SECOND)
    await wait_for(lambda: bool(harness.done))
    failed = harness.done[0][0]
    assert isinstance(failed, TranscriptFailed)
    assert (failed.item_id, failed.code, failed.message) == ("item_a", "backend_error", "vLLM broke.")
    assert harness.of(TranscriptDelta) == [TranscriptDelta("item_a", "half ")]
    await harness.engine.aclose()


async def test_partials_run_while_a_vad_turn_is_open_and_stop_at_its_end() -> None:
    backend = FakeBackend([(0.0, ["done"])])
    harness = Harness(backend, SessionConfig(transcription=Transcription(partial_interval_ms=20)))
    harness.engine.start_item("item_a", 0)
    harness.hear(1)
    await wait_for(lambda: bool(harness.of(TranscriptPartial)))
    assert harness.of(TranscriptPartial)[0] == TranscriptPartial("item_a", "partial 1")
    harness.engine.end_item(SECOND)
    await wait_for(lambda: bool(harness.done))
    said = len(harness.of(TranscriptPartial))
    harness.hear(1)
    await asyncio.sleep(0.1)
    assert len(harness.of(TranscriptPartial)) == said
    assert backend.partial_requests == said  # one request a partial, only while the turn was open
    await harness.engine.aclose()


async def test_a_manual_buffer_gets_no_partials() -> None:
    backend = FakeBackend([])
    config = SessionConfig(turn_detection=None, transcription=Transcription(partial_interval_ms=20))
    harness = Harness(backend, config)
    harness.engine.start_item("item_a", 0)
    harness.hear(1)
    await asyncio.sleep(0.1)
    assert backend.partial_requests == 0
    assert not harness.events
    await harness.engine.aclose()


async def test_a_discarded_item_says_nothing() -> None:
    backend = FakeBackend([(0.0, ["next"])])
    harness = Harness(backend, SessionConfig(transcription=Transcription(partial_interval_ms=20)))
    harness.engine.start_item("item_a", 0)
    harness.engine.discard_item()
    harness.hear(1)
    await asyncio.sleep(0.1)
    assert not harness.events and not backend.partial_requests
    harness.engine.end_item(SECOND)  # nothing is open: nothing to commit
    await asyncio.sleep(0.05)
    assert not harness.events and not harness.done
    await harness.engine.aclose()


async def test_close_cancels_the_transcriptions_in_flight() -> None:
    backend = FakeBackend([(30.0, ["never"])])
    harness = Harness(backend)
    harness.engine.start_item("item_a", 0)
    harness.hear(1)
    harness.engine.end_item(SECOND)
    await asyncio.sleep(0.05)
    await harness.engine.aclose()
    assert backend.cancelled == 1
    assert not harness.events and not harness.done


def eager(outcome: str) -> float:
    return REGISTRY.get_sample_value("edge_realtime_eager_transcriptions_total", {"outcome": outcome}) or 0.0


async def test_an_eager_final_is_held_back_until_the_turn_ends_there_then_released_at_once() -> None:
    backend = FakeBackend([(0.05, ["eager ", "words"])])
    harness = Harness(backend)
    used = eager("used")
    harness.engine.start_item("item_a", 0)
    harness.hear(1)
    harness.engine.pause(SECOND)  # silence from 1 s on
    harness.hear(0.5)
    await asyncio.sleep(0.2)
    assert backend.sent_ms == [1000] and not harness.events, "transcribed at the pause, nothing said yet"
    harness.engine.end_item(SECOND)  # the window confirms the turn where the pause began
    await wait_for(lambda: bool(harness.done))
    assert [(type(e).__name__, getattr(e, "delta", None)) for e in harness.events] == [
        ("TranscriptDelta", "eager "),
        ("TranscriptDelta", "words"),
        ("TranscriptCompleted", None),
    ]
    completed = harness.of(TranscriptCompleted)[0]
    assert (completed.transcript, completed.audio_start_ms, completed.audio_end_ms) == ("eager words", 0, 1000)
    assert backend.sent_ms == [1000], "no second request"
    assert eager("used") == used + 1
    await harness.engine.aclose()


async def test_speech_that_resumes_cancels_the_eager_request_and_nothing_of_it_is_seen() -> None:
    backend = FakeBackend([(30.0, ["never"]), (0.0, ["the ", "whole ", "turn"])])
    harness = Harness(backend)
    discarded = eager("discarded")
    harness.engine.start_item("item_a", 0)
    harness.hear(1)
    harness.engine.pause(SECOND)
    await asyncio.sleep(0.05)
    harness.engine.resume()
    await wait_for(lambda: backend.cancelled == 1)
    harness.hear(1)
    harness.engine.end_item(2 * SECOND)
    await wait_for(lambda: bool(harness.done))
    assert [e.transcript for e in harness.of(TranscriptCompleted)] == ["the whole turn"]
    assert [e.delta for e in harness.of(TranscriptDelta)] == ["the ", "whole ", "turn"]
    assert backend.sent_ms == [1000, 2000]
    assert eager("discarded") == discarded + 1
    await harness.engine.aclose()


async def test_a_turn_that_ends_elsewhere_drops_its_eager_result() -> None:
    backend = FakeBackend([(0.0, ["early"]), (0.0, ["late"]), (30.0, ["never"])])
    harness = Harness(backend)
    harness.engine.start_item("item_a", 0)
    harness.hear(1)
    harness.engine.pause(SECOND)
    await asyncio.sleep(0.05)  # the eager answer is in, held back
    harness.hear(0.5)
    harness.engine.end_item(SECOND + SECOND // 2)  # a manual commit, say: the audio is not the same
    await wait_for(lambda: bool(harness.done))
    assert [(type(e).__name__, e.item_id) for e in harness.events] == [
        ("TranscriptDelta", "item_a"),
        ("TranscriptCompleted", "item_a"),
    ]
    assert harness.of(TranscriptCompleted)[0].transcript == "late"
    # One eager request per pause at most; a discarded item drops its own.
    harness.engine.start_item("item_b", SECOND + SECOND // 2)
    harness.hear(1)
    harness.engine.pause(2 * SECOND + SECOND // 2)
    harness.engine.pause(2 * SECOND + SECOND // 2)
    await asyncio.sleep(0.05)
    assert backend.sent_ms == [1000, 1500, 1000]
    harness.engine.discard_item()
    await wait_for(lambda: backend.cancelled == 1)
    assert len(harness.events) == 2
    await harness.engine.aclose()
