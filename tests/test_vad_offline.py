"""Offline segmentation agrees with silero-vad's own get_speech_timestamps."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from vad_helpers import RATE, RECORDINGS, load_recording, long_mix, silence, silero_timestamps

from vad import SileroModel, SileroSequenceModel, SpeechSegment, VADParams, speech_segments
from vad.pcm import decode_alaw, decode_pcm16, decode_ulaw
from vad.resample import StreamResampler

FRAME = 512


def assert_agrees(ours: list[SpeechSegment], reference: list[tuple[int, int]]) -> None:
    assert len(ours) == len(reference)
    for seg, (start, end) in zip(ours, reference, strict=False):
        assert abs(seg.start_sample - start) <= FRAME
        assert abs(seg.end_sample - end) <= FRAME


@pytest.mark.parametrize("name", RECORDINGS)
def test_default_params_match_silero(name: str) -> None:
    audio = load_recording(name)
    assert_agrees(speech_segments(audio), silero_timestamps(audio))


def test_recordings_contain_speech() -> None:
    """Guards the agreement tests against comparing two empty lists."""
    assert len(speech_segments(load_recording("jfk.flac"))) >= 2
    assert len(speech_segments(load_recording("silero_test.wav"))) >= 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"threshold": 0.3, "min_silence_duration_ms": 300, "speech_pad_ms": 100},
        {"threshold": 0.7, "neg_threshold": 0.6, "min_speech_duration_ms": 500, "speech_pad_ms": 0},
        {"max_speech_duration_s": 3.0},
        {"max_speech_duration_s": 1.5, "min_silence_duration_ms": 500, "speech_pad_ms": 200},
    ],
)
def test_mixed_long_audio_matches_silero(kwargs: dict) -> None:
    audio = long_mix()
    ours = speech_segments(audio, VADParams(**kwargs))
    assert_agrees(ours, silero_timestamps(audio, **kwargs))
    assert len(ours) > 20


def test_max_speech_duration_splits_segments() -> None:
    audio = long_mix()
    limit = 1.5
    pad = 0.03
    segments = speech_segments(audio, VADParams(max_speech_duration_s=limit))
    assert max(s.end - s.start for s in segments) <= limit + 2 * pad
    assert len(segments) > len(speech_segments(audio))


def test_sequence_and_frame_models_give_same_probabilities() -> None:
    audio = long_mix()[: 30 * RATE]
    np.testing.assert_allclose(
        SileroSequenceModel().probabilities(audio), SileroModel().probabilities(audio), atol=1e-5
    )


def test_segment_seconds_and_silence() -> None:
    assert speech_segments(silence(3.0)) == []
    assert speech_segments(np.zeros(0, dtype=np.float32)) == []
    seg = SpeechSegment(8000, 24000)
    assert (seg.start, seg.end) == (0.5, 1.5)


def test_speech_is_located_in_time() -> None:
    speech = load_recording("jfk.flac")
    audio = np.concatenate([silence(5.0), speech, silence(4.0)])
    segments = speech_segments(audio)
    assert 5.0 - 0.5 < segments[0].start < 5.0 + 1.0
    assert segments[-1].end < 5.0 + len(speech) / RATE + 0.1


def test_resample_to_16k() -> None:
    for rate in (8000, 24000, 44100, 48000):
        t = np.arange(rate) / rate
        tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
        out = StreamResampler(rate).process(tone, last=True)
        assert out.dtype == np.float32
        assert abs(len(out) - RATE) <= 1
        expected = np.sin(2 * np.pi * 440 * np.arange(len(out)) / RATE)
        assert np.abs(out[200:-200] - expected[200:-200]).max() < 1e-3


def test_stream_resampler_matches_whole_signal() -> None:
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.1, 48000 * 2).astype(np.float32)
    stream = StreamResampler(48000)
    sizes = rng.integers(1, 3000, 200)
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(stream.process(audio[pos : pos + size]))
        pos += size
    chunks.append(stream.process(audio[pos:], last=True))
    streamed = np.concatenate(chunks)
    whole = soxr.resample(audio, 48000, RATE, quality="HQ")
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-4)


def test_pcm_decoders() -> None:
    pcm = np.array([0, 16384, -32768, 32767], dtype="<i2").tobytes()
    np.testing.assert_array_equal(decode_pcm16(pcm), [0.0, 0.5, -1.0, 32767 / 32768])
    with pytest.raises(ValueError):
        decode_pcm16(b"\x00")
    # G.711 reference points: silence codes and the extremes.
    assert decode_ulaw(b"\xff\x7f")[0] == 0.0
    assert decode_ulaw(b"\x00")[0] * 32768 == -32124
    assert decode_ulaw(b"\x80")[0] * 32768 == 32124
    assert decode_alaw(b"\xd5\x55").tolist() == [8 / 32768, -8 / 32768]
    assert decode_alaw(b"\xaa")[0] * 32768 == 32256
    for decode in (decode_ulaw, decode_alaw):
        values = decode(bytes(range(256)))
        assert values.dtype == np.float32 and np.abs(values).max() <= 1.0
        assert len(np.unique(values)) >= 255


def test_g711_matches_audioop() -> None:
    audioop = pytest.importorskip("audioop")
    codes = bytes(range(256))
    ulaw = np.frombuffer(audioop.ulaw2lin(codes, 2), dtype="<i2") / 32768
    alaw = np.frombuffer(audioop.alaw2lin(codes, 2), dtype="<i2") / 32768
    np.testing.assert_array_equal(decode_ulaw(codes), ulaw)
    np.testing.assert_array_equal(decode_alaw(codes), alaw)
