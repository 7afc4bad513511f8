"""Batched engine: per-row results equal single-stream runs; slots come and go; loop stays free."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from vad_helpers import RATE, load_recording, long_mix, silence

from vad import BatchedVADEngine, SileroModel, StreamingDetector, StreamParams
from vad.framing import Framer


def test_batched_rows_equal_solo_runs() -> None:
    """One batched call over many streams == each stream stepped alone (float tolerance)."""
    model = SileroModel()
    audio = long_mix()
    streams = [audio[i * 3 * RATE : i * 3 * RATE + 20 * RATE] for i in range(12)]
    inputs = [Framer().push(s) for s in streams]
    n_frames = len(inputs[0])

    solo = np.empty((len(streams), n_frames), dtype=np.float32)
    for b, rows in enumerate(inputs):
        state = model.initial_state()
        for t in range(n_frames):
            p, state = model.run(rows[t][None], state)
            solo[b, t] = p[0]

    batched = np.empty_like(solo)
    state = model.initial_state(len(streams))
    for t in range(n_frames):
        frames = np.stack([rows[t][64:] for rows in inputs])
        contexts = np.stack([rows[t][:64] for rows in inputs])
        batched[:, t], state = model(frames, contexts, state)
    np.testing.assert_allclose(batched, solo, atol=1e-5)
    assert solo.max() > 0.9 and solo.min() < 0.1  # real speech and pauses in the mix


async def feed_all(stream, audio: np.ndarray, chunk_sizes) -> list:
    events, pos = [], 0
    for size in chunk_sizes:
        if pos >= len(audio):
            break
        events += await stream.feed(audio[pos : pos + size])
        pos += size
    return events + stream.flush()


def solo_events(params: StreamParams, audio: np.ndarray, chunk_sizes) -> list:
    detector, events, pos = StreamingDetector(params), [], 0
    for size in chunk_sizes:
        if pos >= len(audio):
            break
        events += detector.feed(audio[pos : pos + size])
        pos += size
    return events + detector.flush()


async def test_engine_streams_match_streaming_detector() -> None:
    audio = long_mix()
    rng = np.random.default_rng(3)
    cases = []
    for i in range(24):
        offset = int(rng.integers(0, len(audio) - 40 * RATE))
        params = StreamParams(silence_duration_ms=[200, 500][i % 2], prefix_padding_ms=[100, 300][i % 2])
        chunks = rng.integers(1, 6000, 2000)
        cases.append((audio[offset : offset + 40 * RATE], params, chunks))

    async with BatchedVADEngine(max_batch=8) as engine:
        streams = [engine.open_stream(params) for _, params, _ in cases]
        results = await asyncio.gather(*(feed_all(s, a, c) for s, (a, _, c) in zip(streams, cases, strict=False)))
    for (a, params, chunks), events in zip(cases, results, strict=False):
        assert events == solo_events(params, a, chunks)
    assert sum(len(e) for e in results) > 24


async def test_sessions_come_and_go() -> None:
    speech = load_recording("silero_test.wav")[: 15 * RATE]
    expected = solo_events(StreamParams(), speech, [1600] * 200)
    assert expected
    async with BatchedVADEngine(initial_slots=2) as engine:
        first = engine.open_stream()
        await first.feed(speech[: 5 * RATE])
        leaving = [engine.open_stream() for _ in range(5)]  # grows past the initial 2 slots
        await asyncio.gather(*(s.feed(speech[: 3 * RATE]) for s in leaving))
        assert engine.open_streams == 6
        for s in leaving:
            s.close()
        assert engine.open_streams == 1
        # A newcomer reuses a freed slot and must start from a clean state.
        newcomer = engine.open_stream()
        assert newcomer.slot in {s.slot for s in leaving}
        assert await feed_all(newcomer, speech, [1600] * 200) == expected
        # reset() forgets everything: the old stream now behaves like a new one.
        first.reset()
        assert await feed_all(first, speech, [1600] * 200) == expected


async def test_reset_during_pending_feed_drops_its_result() -> None:
    speech = load_recording("silero_test.wav")[: 10 * RATE]
    async with BatchedVADEngine() as engine:
        stream = engine.open_stream()
        pending = asyncio.ensure_future(stream.feed(speech))
        await asyncio.sleep(0)
        stream.reset()
        assert await pending == []
        assert await feed_all(stream, speech, [3200] * 100) == solo_events(StreamParams(), speech, [3200] * 100)


async def test_batched_inference_runs_off_the_event_loop() -> None:
    """With many streams, every batched model call runs in a worker thread, never on the loop.

    Only ticks of at most `inline_rows` rows (well under a millisecond of work) may run inline.
    """
    audio = long_mix()[: 4 * RATE]
    model = SileroModel()
    calls: list[tuple[int, bool]] = []
    loop_thread = threading.get_ident()
    run = model.run

    def spy(inputs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append((len(inputs), threading.get_ident() == loop_thread))
        return run(inputs, state)

    model.run = spy  # type: ignore[method-assign]
    async with BatchedVADEngine(model, inline_rows=4) as engine:
        streams = [engine.open_stream() for _ in range(256)]
        await asyncio.gather(*(feed_all(s, audio, [1600] * 40) for s in streams))
    big = [on_loop for rows, on_loop in calls if rows > 4]
    assert big, "256 streams must have been evaluated in batches"
    assert not any(big)
    assert max(rows for rows, _ in calls) > 64


async def test_feed_without_start_fails_and_silence_is_quiet() -> None:
    engine = BatchedVADEngine()
    stream = engine.open_stream()
    try:
        await stream.feed(silence(0.1))
    except RuntimeError:
        pass
    else:
        raise AssertionError("feeding a stopped engine must fail")
    async with BatchedVADEngine() as engine:
        stream = engine.open_stream()
        assert await stream.feed(silence(2.0)) == [] and stream.flush() == []


class CountingModel(SileroModel):
    """The real model, counting the rows of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def run(self, inputs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(len(inputs))
        return super().run(inputs, state)


async def test_batch_window_joins_streams_feeding_apart_and_keeps_results() -> None:
    """Streams appending at different moments (as live sessions do) meet in one call with a window;
    what each stream hears is unchanged."""
    audio = long_mix()
    cases = [(audio[i * 2 * RATE : i * 2 * RATE + 6 * RATE], StreamParams()) for i in range(6)]

    async def staggered(stream, clip: np.ndarray, delay_s: float) -> list:
        await asyncio.sleep(delay_s)
        events = []
        for start in range(0, len(clip), 1600):
            events += await stream.feed(clip[start : start + 1600])
            await asyncio.sleep(0.01)
        return events + stream.flush()

    sizes = {}
    for window_s in (0.0, 0.03):
        model = CountingModel()
        async with BatchedVADEngine(model, batch_window_s=window_s) as engine:
            streams = [engine.open_stream(params) for _, params in cases]
            results = await asyncio.gather(
                *(staggered(s, clip, i * 0.003) for i, (s, (clip, _)) in enumerate(zip(streams, cases, strict=True)))
            )
        for (clip, params), events in zip(cases, results, strict=True):
            assert events == solo_events(params, clip, [1600] * (len(clip) // 1600 + 1))
        sizes[window_s] = sum(model.batches) / len(model.batches)
    assert sizes[0.03] > sizes[0.0]
