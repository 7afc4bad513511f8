"""The streaming engine against a real vLLM serving the tiny realtime model (`/v1/realtime`).

The text of a random-weight model is noise, so these tests check where text goes and how much
audio vLLM heard: vLLM answers every 80 ms step of a generation with one delta, so the number of
deltas counts the audio it received (see `expected_steps`).
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from prometheus_client import REGISTRY
from realtime_helpers import wait_until

from server.backend.vllm_realtime.errors import RealtimeBackendError, RealtimeRefused, RealtimeUnavailable
from server.backend.vllm_realtime.probe import RealtimeBackend, RealtimeProbe, probe_realtime
from server.backend.vllm_realtime.protocol import STEP_SAMPLES
from server.backend.vllm_realtime.stream import (
    RealtimeStream,
    SegmentDone,
    StreamDelta,
    heard_end,
    spoken_span,
    steps_per_generation,
)
from server.core.audio import decode_audio
from server.process.devmodel import REALTIME_SERVED_NAME
from server.realtime.engines import EngineKind, EngineSelector
from server.realtime.events import Event, TranscriptCompleted, TranscriptDelta, TranscriptFailed
from server.realtime.stream_engine import StreamEngine
from tests.conftest import DATA, REALTIME_TEST_MAX_MODEL_LEN, SERVED_MODEL, edge_settings

SECOND = 16000
# vLLM pads a generation's audio with 32 steps of silence before and 17 after, and each step
# looks 2.5 ms (40 samples) ahead.
LEFT_PAD = 32 * STEP_SAMPLES
RIGHT_PAD = 21760
LOOK_AHEAD = 40
WAIT_S = 120
# A margin no step of vLLM's right padding reaches: the final waits for vLLM's `done`, so its usage
# counts every step of the generation, which is what the tests of lost audio count on.
AT_DONE_MS = 60_000


def expected_steps(samples: int) -> int:
    """Deltas of one generation of `samples` of audio: its frames, each one step past the first."""
    first_frame_end = heard_end(LEFT_PAD, 0) + LOOK_AHEAD
    return (LEFT_PAD + samples + RIGHT_PAD - first_frame_end) // STEP_SAMPLES + 1


def steps_to_write(samples: int) -> int:
    """Deltas of a generation up to the first whose text stands for audio `samples` after its start."""
    step = 0
    while spoken_span(heard_end(0, step))[1] < samples:
        step += 1
    return step + 1


def speech(seconds: float) -> np.ndarray:
    return np.resize(decode_audio(DATA / "jfk.flac", max_duration_s=600), int(seconds * SECOND))


async def wait_for(condition: Callable[[], bool]) -> None:
    await wait_until(condition, WAIT_S, poll_s=0.02)


@dataclass
class Recorder:
    """Everything a `StreamEngine` reports."""

    events: list[Event] = field(default_factory=list)
    errors: list[RealtimeBackendError] = field(default_factory=list)
    turns_done: list[TranscriptCompleted | TranscriptFailed] = field(default_factory=list)

    def of(self, kind: type, item_id: str) -> list:
        return [e for e in self.events if isinstance(e, kind) and e.item_id == item_id]

    def final(self, item_id: str) -> TranscriptCompleted | TranscriptFailed | None:
        found = [
            e for e in self.events if isinstance(e, (TranscriptCompleted, TranscriptFailed)) and e.item_id == item_id
        ]
        return found[0] if found else None


@contextlib.asynccontextmanager
async def engine_for(
    backend: RealtimeBackend, margin_ms: int = AT_DONE_MS
) -> AsyncIterator[tuple[StreamEngine, Recorder]]:
    recorder = Recorder()
    engine = StreamEngine(
        backend,
        recorder.events.append,
        recorder.errors.append,
        on_turn_done=recorder.turns_done.append,
        margin_ms=margin_ms,
    )
    try:
        yield engine, recorder
    finally:
        await engine.aclose()


@pytest.fixture(scope="module")
def realtime_backend(realtime_vllm_url: str) -> RealtimeBackend:
    return RealtimeBackend(
        url=realtime_vllm_url + "/v1", model=REALTIME_SERVED_NAME, max_model_len=REALTIME_TEST_MAX_MODEL_LEN
    )


async def feed(engine: StreamEngine, audio: np.ndarray, chunk: int = 1600) -> None:
    for i in range(0, len(audio), chunk):
        engine.append(audio[i : i + chunk])
        await asyncio.sleep(0.005)


async def test_the_realtime_model_is_detected(realtime_vllm_url: str, vllm_url: str) -> None:
    found = await probe_realtime(realtime_vllm_url)
    assert found is not None
    assert (found.model, found.max_model_len) == (REALTIME_SERVED_NAME, REALTIME_TEST_MAX_MODEL_LEN)
    assert await probe_realtime(vllm_url, model=SERVED_MODEL) is None
    assert await RealtimeProbe(realtime_vllm_url).backend() == found
    assert await RealtimeProbe(vllm_url, model=SERVED_MODEL).backend() is None


async def test_sessions_pick_their_engine_from_the_settings(realtime_vllm_url: str, vllm_url: str) -> None:
    separate = EngineSelector(edge_settings(vllm_url, realtime_vllm_url=realtime_vllm_url))
    kind, backend = await separate.select()
    assert kind == EngineKind.STREAM and backend is not None and backend.model == REALTIME_SERVED_NAME
    assert await EngineSelector(edge_settings(vllm_url)).select() == (EngineKind.TURNS, None)
    turns = edge_settings(vllm_url, realtime_vllm_url=realtime_vllm_url, realtime_engine="turns")
    assert await EngineSelector(turns).select() == (EngineKind.TURNS, None)
    same = EngineSelector(edge_settings(realtime_vllm_url, served_model_name=REALTIME_SERVED_NAME))
    assert (await same.select())[0] == EngineKind.STREAM
    with pytest.raises(RuntimeError, match="no realtime-capable model"):
        await EngineSelector(edge_settings(vllm_url, realtime_engine="stream")).select()


async def test_deltas_arrive_while_the_audio_streams(realtime_backend: RealtimeBackend) -> None:
    audio = speech(6)
    async with engine_for(realtime_backend) as (engine, recorder):
        engine.start_item("item_a", 0)
        await feed(engine, audio[: 3 * SECOND])
        await wait_for(lambda: bool(recorder.of(TranscriptDelta, "item_a")))
        assert recorder.final("item_a") is None
        await feed(engine, audio[3 * SECOND :])
        engine.end_item(engine.position)
        await wait_for(lambda: recorder.final("item_a") is not None)
    completed = recorder.final("item_a")
    assert isinstance(completed, TranscriptCompleted)
    assert completed.transcript == "".join(d.delta for d in recorder.of(TranscriptDelta, "item_a"))
    assert completed.transcript
    assert (completed.audio_start_ms, completed.audio_end_ms) == (0, 6000)
    assert completed.usage.output_tokens == expected_steps(len(audio))
    assert not recorder.errors


async def test_item_boundaries_split_the_audio_without_loss(realtime_backend: RealtimeBackend) -> None:
    """Manual commits (one item right after the other) and a VAD item that starts in the past."""
    audio = speech(10)
    async with engine_for(realtime_backend) as (engine, recorder):
        engine.start_item("item_a", 0)
        await feed(engine, audio[: 3 * SECOND])
        engine.end_item(3 * SECOND)
        engine.start_item("item_b", 3 * SECOND)  # a commit: the next item starts where it ended
        await feed(engine, audio[3 * SECOND : 5 * SECOND])
        engine.end_item(5 * SECOND)
        await feed(engine, audio[5 * SECOND : 8 * SECOND])  # outside any item
        engine.start_item("item_c", 7 * SECOND)  # speech detected late: starts 1 s in the past
        await feed(engine, audio[8 * SECOND :])
        engine.end_item(10 * SECOND)
        await wait_for(lambda: recorder.final("item_c") is not None)
    finals = [e for e in recorder.events if isinstance(e, (TranscriptCompleted, TranscriptFailed))]
    assert [e.item_id for e in finals] == ["item_a", "item_b", "item_c"]
    assert recorder.turns_done == finals  # every item ended by `end_item` is a finished turn
    spans = {"item_a": (0, 3000), "item_b": (3000, 5000), "item_c": (7000, 10000)}
    for event in finals:
        assert isinstance(event, TranscriptCompleted)
        assert event.transcript == "".join(d.delta for d in recorder.of(TranscriptDelta, event.item_id))
        start, end = spans[event.item_id]
        assert (event.audio_start_ms, event.audio_end_ms) == (start, end)
        assert event.usage.output_tokens == expected_steps((end - start) * 16)
    # Each item's deltas come before its completion, and none after it.
    for event in finals:
        done_at = recorder.events.index(event)
        assert all(recorder.events.index(d) < done_at for d in recorder.of(TranscriptDelta, event.item_id))


async def test_a_segment_longer_than_one_generation_loses_no_audio(realtime_vllm_url: str) -> None:
    audio = speech(40)
    budget = steps_per_generation(REALTIME_TEST_MAX_MODEL_LEN) * STEP_SAMPLES
    deltas: list[StreamDelta] = []
    done: list[SegmentDone] = []
    errors: list[RealtimeBackendError] = []
    stream = RealtimeStream(
        realtime_vllm_url,
        REALTIME_SERVED_NAME,
        max_model_len=REALTIME_TEST_MAX_MODEL_LEN,
        on_delta=deltas.append,
        on_done=done.append,
        on_error=errors.append,
    )
    try:
        stream.start_segment("long", 0)
        for i in range(0, len(audio), 1600):
            stream.feed(audio[i : i + 1600])
            await asyncio.sleep(0.002)
        stream.end_segment()
        await wait_for(lambda: bool(done or errors))
    finally:
        await stream.aclose()
    assert not errors
    generations = [budget] * (len(audio) // budget) + [len(audio) % budget]
    assert done[0].generations == len(generations) == 3
    assert done[0].steps == len(deltas) == sum(expected_steps(n) for n in generations)
    # Every generation's deltas are numbered from the audio it began with.
    starts = sorted({d.generation_start for d in deltas})
    assert starts == [0, budget, 2 * budget]


async def test_a_generation_vllm_ends_itself_loses_no_audio(realtime_vllm_url: str) -> None:
    """vLLM's `max_model_len` is smaller than the stream was told: vLLM stops the generation, and the
    audio after the last step it wrote text for goes to a new generation."""
    audio = speech(25)
    deltas: list[StreamDelta] = []
    done: list[SegmentDone] = []
    stream = RealtimeStream(
        realtime_vllm_url,
        REALTIME_SERVED_NAME,
        max_model_len=4 * REALTIME_TEST_MAX_MODEL_LEN,
        on_delta=deltas.append,
        on_done=done.append,
        on_error=lambda exc: None,
    )
    try:
        stream.start_segment("long", 0)
        stream.feed(audio)
        stream.end_segment()
        await wait_for(lambda: bool(done))
    finally:
        await stream.aclose()
    # vLLM's first generation writes one step per token left after the 39-token prompt; the text
    # of its last step stands for the audio up to `spoken_span`, and the rest is sent again.
    first_steps = REALTIME_TEST_MAX_MODEL_LEN - 39
    resume = spoken_span(heard_end(0, first_steps - 1))[1]
    assert sorted({d.generation_start for d in deltas}) == [0, resume]
    assert done[0].generations == 2
    assert done[0].steps == len(deltas) == first_steps + expected_steps(len(audio) - resume)


async def test_each_step_hears_the_audio_up_to_heard_end(realtime_vllm_url: str) -> None:
    """The step-to-time mapping behind word timestamps: delta `k` needs the audio up to
    `heard_end(k)` (plus the look-ahead) and no more; the text of step `k` then stands for the
    audio a delay earlier."""
    audio = speech(2)
    deltas: list[StreamDelta] = []
    stream = RealtimeStream(
        realtime_vllm_url,
        REALTIME_SERVED_NAME,
        max_model_len=REALTIME_TEST_MAX_MODEL_LEN,
        on_delta=deltas.append,
        on_done=lambda done: None,
        on_error=lambda exc: None,
    )
    fed = 0
    try:
        stream.start_segment("timing", 0)
        for step in range(4):
            needed = heard_end(0, step) + LOOK_AHEAD
            for target, count in ((needed - 1, step), (needed, step + 1)):
                stream.feed(audio[fed:target])
                fed = target
                await wait_for(lambda count=count: len(deltas) >= count)
                await asyncio.sleep(0.5)  # a step computed early would show up by now
                assert len(deltas) == count, f"after {fed} samples"
        assert [d.heard_until for d in deltas] == [heard_end(0, k) for k in range(4)]
    finally:
        await stream.aclose()


class CuttableProxy:
    """A TCP proxy in front of the real vLLM whose connections can be cut: vLLM "going away"
    mid-stream, which the real server cannot be made to do on demand."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()


async def test_vllm_going_away_fails_the_open_item_cleanly(realtime_vllm_url: str) -> None:
    proxy = CuttableProxy(int(realtime_vllm_url.rsplit(":", 1)[1]))
    url = await proxy.start()
    backend = RealtimeBackend(url=url, model=REALTIME_SERVED_NAME, max_model_len=REALTIME_TEST_MAX_MODEL_LEN)
    async with engine_for(backend) as (engine, recorder):
        engine.start_item("item_a", 0)
        await feed(engine, speech(2))
        await wait_for(lambda: bool(recorder.of(TranscriptDelta, "item_a")))
        proxy.cut()
        await wait_for(lambda: bool(recorder.errors))
        await feed(engine, speech(1))  # audio after the failure is ignored
    assert isinstance(recorder.errors[0], RealtimeUnavailable)
    assert len(recorder.errors) == 1
    failed = recorder.final("item_a")
    assert isinstance(failed, TranscriptFailed)
    assert failed.code == "backend_unavailable"
    assert not recorder.turns_done  # the item was never committed


async def test_a_model_vllm_does_not_serve_is_a_typed_error(realtime_vllm_url: str) -> None:
    backend = RealtimeBackend(url=realtime_vllm_url, model="no-such-model", max_model_len=REALTIME_TEST_MAX_MODEL_LEN)
    async with engine_for(backend) as (engine, recorder):
        engine.start_item("item_a", 0)
        await feed(engine, speech(1))
        engine.end_item(engine.position)
        await wait_for(lambda: bool(recorder.errors))
    error = recorder.errors[0]
    assert isinstance(error, RealtimeRefused)
    assert error.vllm_code == "model_not_found"
    failed = recorder.final("item_a")
    assert isinstance(failed, TranscriptFailed)


async def test_a_final_goes_out_once_vllm_has_written_the_items_text(
    realtime_backend: RealtimeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """Not after vLLM's right padding: at the step whose text stands for the item's end (a VAD
    turn, whose speech ended half a second before it) or for the margin past a commit's end; the
    stream goes on with the next item, and nothing about an item comes after its final."""
    audio, margin_ms = speech(6), 160
    caplog.set_level(logging.INFO, logger="edge.realtime")
    async with engine_for(realtime_backend, margin_ms=margin_ms) as (engine, recorder):
        engine.start_item("item_a", 0)
        await feed(engine, audio[: 3 * SECOND])
        engine.end_item(int(2.5 * SECOND))  # server VAD: the speech stopped 0.5 s before the audio sent
        engine.start_item("item_b", 3 * SECOND)
        await feed(engine, audio[3 * SECOND :])
        engine.end_item(6 * SECOND)  # a commit: speech may run to its end
        await wait_for(lambda: "realtime item item_b streamed" in caplog.text)  # vLLM's done came too
    finals = [e for e in recorder.events if isinstance(e, TranscriptCompleted)]
    assert [e.item_id for e in finals] == ["item_a", "item_b"] and recorder.turns_done == finals
    a, b = finals
    assert a.usage.output_tokens == steps_to_write(3 * SECOND) < expected_steps(3 * SECOND)
    assert b.usage.output_tokens == steps_to_write(3 * SECOND + margin_ms * 16) < expected_steps(3 * SECOND)
    for event in finals:
        assert event.transcript == "".join(d.delta for d in recorder.of(TranscriptDelta, event.item_id))
        mine = [e for e in recorder.events if getattr(e, "item_id", None) == event.item_id]
        assert mine[-1] is event
    assert (a.audio_end_ms, b.audio_start_ms, b.audio_end_ms) == (3000, 3000, 6000)
    assert not recorder.errors


async def test_text_vllm_writes_after_an_early_final_is_logged_and_counted(
    realtime_backend: RealtimeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """With no margin, what the random model writes in its padding is dropped, and said: the
    early final plus the logged text is the transcript of the same audio at vLLM's done."""
    audio = speech(3)

    async def transcribe(margin_ms: int, run: int) -> str:
        async with engine_for(realtime_backend, margin_ms=margin_ms) as (engine, recorder):
            engine.start_item("item_a", 0)
            await feed(engine, audio)
            engine.end_item(len(audio))
            await wait_for(lambda: caplog.text.count("realtime item item_a streamed") == run)
        final = recorder.final("item_a")
        assert isinstance(final, TranscriptCompleted)
        return final.transcript

    caplog.set_level(logging.INFO, logger="edge.realtime")
    whole = await transcribe(AT_DONE_MS, 1)
    late_before = REGISTRY.get_sample_value("edge_realtime_stream_late_text_total") or 0.0
    early = await transcribe(0, 2)
    late = [r.args[1] for r in caplog.records if "after the item's final" in r.getMessage()]  # type: ignore[index]
    counted = (REGISTRY.get_sample_value("edge_realtime_stream_late_text_total") or 0.0) - late_before
    assert counted == len(late) <= 1
    assert early + "".join(late) == whole


async def test_a_discarded_item_says_nothing_and_the_next_one_goes_on(realtime_backend: RealtimeBackend) -> None:
    audio = speech(4)
    async with engine_for(realtime_backend) as (engine, recorder):
        engine.start_item("item_a", 0)
        await feed(engine, audio[: 2 * SECOND])
        engine.discard_item()  # input_audio_buffer.clear
        said = len(recorder.events)
        engine.start_item("item_b", 2 * SECOND)
        await feed(engine, audio[2 * SECOND :])
        engine.end_item(4 * SECOND)
        await wait_for(lambda: recorder.final("item_b") is not None)
    # Deltas already sent stay sent; nothing about the item comes after it is discarded.
    assert not [e for e in recorder.events[said:] if getattr(e, "item_id", None) == "item_a"]
    completed = recorder.final("item_b")
    assert isinstance(completed, TranscriptCompleted)
    assert completed.usage.output_tokens == expected_steps(2 * SECOND)
    assert recorder.turns_done == [completed]
