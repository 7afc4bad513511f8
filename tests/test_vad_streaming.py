"""Streaming detector: chunking-independent events that match offline segmentation."""

from __future__ import annotations

import numpy as np
import pytest
from vad_helpers import RATE, RECORDINGS, load_recording, long_mix, silence

from vad import (
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    StreamingDetector,
    StreamParams,
    VADParams,
    speech_segments,
)

FRAME = 512


def run_stream(detector, audio: np.ndarray, chunk_sizes) -> list:
    events, pos = [], 0
    for size in chunk_sizes:
        if pos >= len(audio):
            break
        events += detector.feed(audio[pos : pos + size])
        pos += size
    if pos < len(audio):
        events += detector.feed(audio[pos:])
    return events + detector.flush()


def random_chunks(seed: int, n: int = 100_000) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 4000, n)


def turns(events) -> list[tuple[int, int]]:
    """Pair up events, checking they alternate start/stop."""
    assert all(isinstance(e, SpeechStarted) for e in events[::2])
    assert all(isinstance(e, SpeechStopped) for e in events[1::2])
    assert len(events) % 2 == 0
    return [(a.sample, b.sample) for a, b in zip(events[::2], events[1::2], strict=False)]


def offline_equivalent(audio: np.ndarray, params: StreamParams) -> list[tuple[int, int]]:
    """Offline segments with the streaming parameters: no padding, prefix applied to starts only."""
    offline = VADParams(
        threshold=params.threshold,
        neg_threshold=params.neg_threshold,
        min_speech_duration_ms=params.min_speech_duration_ms,
        min_silence_duration_ms=params.silence_duration_ms,
        speech_pad_ms=0,
    )
    prefix = params.prefix_padding_ms * RATE // 1000
    return [(max(0, s.start_sample - prefix), s.end_sample) for s in speech_segments(audio, offline)]


STREAM_PARAMS = [
    StreamParams(),
    StreamParams(threshold=0.4, prefix_padding_ms=100, silence_duration_ms=200),
    StreamParams(threshold=0.6, prefix_padding_ms=500, silence_duration_ms=800, min_speech_duration_ms=250),
]


@pytest.mark.parametrize("params", STREAM_PARAMS)
@pytest.mark.parametrize("name", [*RECORDINGS, "mix"])
def test_stream_matches_offline(name: str, params: StreamParams) -> None:
    audio = long_mix() if name == "mix" else load_recording(name)
    streamed = turns(run_stream(StreamingDetector(params), audio, random_chunks(1)))
    expected = offline_equivalent(audio, params)
    assert len(streamed) == len(expected)
    for (s, e), (xs, xe) in zip(streamed, expected, strict=False):
        assert abs(s - xs) <= FRAME and abs(e - xe) <= FRAME


def test_chunk_size_does_not_change_events() -> None:
    audio = long_mix()[: 60 * RATE]
    reference = run_stream(StreamingDetector(), audio, [FRAME] * 10_000)
    assert len(reference) >= 10
    for sizes in ([1, 7, 511, 513, 1023], [160] * 1000, [48_000]):
        chunks = np.resize(np.array(sizes), 100_000)
        assert run_stream(StreamingDetector(), audio, chunks) == reference


def test_events_arrive_after_hangover_with_prefix_padding() -> None:
    speech = load_recording("jfk.flac")[: 2 * RATE]
    audio = np.concatenate([silence(2.0), speech, silence(3.0)])
    params = StreamParams(prefix_padding_ms=300, silence_duration_ms=500)
    detector = StreamingDetector(params)
    fed, emitted = 0, []
    for chunk in np.array_split(audio, len(audio) // 320):
        fed += len(chunk)
        emitted += [(event, fed) for event in detector.feed(chunk)]
    (started, at_start), (stopped, at_stop) = emitted[0], emitted[-1]
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    # Started is reported within a frame of the speech onset, dated back by the prefix padding.
    onset = 2 * RATE
    assert onset - 300 * 16 - 2 * FRAME <= started.sample <= onset + 0.5 * RATE - 300 * 16
    assert at_start - (started.sample + 300 * 16) <= 2 * FRAME
    # Stopped is only known once silence_duration_ms of silence has been heard.
    assert at_stop - stopped.sample >= 500 * 16
    assert at_stop - stopped.sample <= 500 * 16 + 2 * FRAME
    assert stopped.sample <= onset + len(speech) + FRAME


def test_flush_closes_open_turn_and_reset_forgets() -> None:
    recording = load_recording("jfk.flac")
    first = speech_segments(recording)[0]
    speech = recording[: (first.start_sample + first.end_sample) // 2]  # cut mid-turn
    detector = StreamingDetector()
    events = detector.feed(speech)
    assert [type(e) for e in events] == [SpeechStarted]
    assert detector.flush() == [SpeechStopped(len(speech))]
    assert detector.flush() == []

    detector.feed(speech)
    detector.reset()
    assert detector.feed(silence(1.0)) == []
    assert detector.flush() == []


def test_silence_gives_no_events() -> None:
    detector = StreamingDetector()
    assert detector.feed(silence(5.0)) == [] and detector.flush() == []


def test_pauses_inside_a_turn_are_reported_and_the_last_is_where_it_ends() -> None:
    """With `pause_ms`, every quiet run of that length inside a turn is a `SpeechPaused` (at the
    sample the turn would end at), speech after it a `SpeechResumed`; the turn's own end is the
    last pause's sample. Without it, the same audio gives the same turns and no pause events."""
    recording = load_recording("jfk.flac")
    first = speech_segments(recording)[0]
    speech = recording[first.start_sample : first.end_sample]
    gap = 0.25  # longer than the pause, shorter than the silence window
    audio = np.concatenate([silence(1.0), speech, silence(gap), speech, silence(2.0)])
    paused = StreamParams(silence_duration_ms=500, pause_ms=150)
    events = run_stream(StreamingDetector(paused), audio, random_chunks(3))
    kinds = [type(e) for e in events]
    assert kinds[0] is SpeechStarted and kinds[-2:] == [SpeechPaused, SpeechStopped]
    assert SpeechResumed in kinds, "the 300 ms gap paused the turn and speech resumed it"
    for index, kind in enumerate(kinds):
        if kind is SpeechResumed:
            assert kinds[index - 1] is SpeechPaused
            assert events[index].sample > events[index - 1].sample
    assert events[-2].sample == events[-1].sample
    plain = run_stream(StreamingDetector(StreamParams(silence_duration_ms=500)), audio, random_chunks(3))
    assert [e for e in events if isinstance(e, SpeechStarted | SpeechStopped)] == plain
    # A pause no shorter than the silence window says nothing more.
    same = run_stream(StreamingDetector(StreamParams(silence_duration_ms=500, pause_ms=500)), audio, random_chunks(3))
    assert same == plain
