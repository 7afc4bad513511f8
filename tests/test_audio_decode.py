"""Decoding every format the API accepts to 16 kHz mono float32, and refusing what it cannot."""

import io
import struct
import wave
from pathlib import Path

import av
import numpy as np
import pytest

import server.core.audio
from server.core.audio import SAMPLE_RATE, decode_audio, encode_wav
from server.core.errors import InputError
from tests.media_helpers import encode_media, tone

DATA = Path(__file__).parent / "data"
LIMIT_S = 600.0


def assert_audio(samples: np.ndarray, seconds: float, tolerance_s: float = 0.05) -> None:
    """16 kHz mono float32, C-contiguous, about `seconds` long, not silent, not clipped."""
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert samples.flags.c_contiguous
    assert abs(samples.size / SAMPLE_RATE - seconds) <= tolerance_s, samples.size / SAMPLE_RATE
    assert np.sqrt(np.mean(samples**2)) > 0.005
    assert np.abs(samples).max() <= 1.0


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)[spectrum.argmax()])


def assert_error(source, status: int, code: str, max_duration_s: float = LIMIT_S) -> InputError:
    with pytest.raises(InputError) as info:
        decode_audio(source, max_duration_s=max_duration_s)
    assert (info.value.status, info.value.code) == (status, code), info.value.message
    return info.value


@pytest.mark.parametrize(
    ("name", "seconds"),
    [("jfk.flac", 11.0), ("silero_test.wav", 60.0), ("silero_test.mp3", 2.53), ("silero_test.opus", 8.06)],
)
def test_recordings_decode_as_bytes_path_and_file(name: str, seconds: float) -> None:
    path = DATA / name
    from_bytes = decode_audio(path.read_bytes(), max_duration_s=LIMIT_S)
    assert_audio(from_bytes, seconds)
    np.testing.assert_array_equal(decode_audio(path, max_duration_s=LIMIT_S), from_bytes)
    np.testing.assert_array_equal(decode_audio(str(path), max_duration_s=LIMIT_S), from_bytes)
    with path.open("rb") as file:
        file.read(100)  # the whole file is decoded whatever the position
        np.testing.assert_array_equal(decode_audio(file, max_duration_s=LIMIT_S), from_bytes)


@pytest.mark.parametrize(
    ("container_format", "codec", "options"),
    [
        pytest.param("webm", "libopus", {}, id="webm-opus"),
        pytest.param("ipod", "aac", {"rate": 44100}, id="m4a-aac"),
        pytest.param("flac", "flac", {"rate": 44100}, id="flac"),
        pytest.param("ogg", "libopus", {"layout": "mono"}, id="ogg-opus"),
        pytest.param("mp3", "libmp3lame", {"rate": 22050}, id="mp3"),
        pytest.param("wav", "pcm_s16le", {"rate": 8000, "layout": "mono"}, id="wav-8k-mono"),
        pytest.param("wav", "pcm_s16le", {"rate": 44100, "layout": "stereo"}, id="wav-stereo"),
        pytest.param("mp4", "aac", {"rate": 44100, "video_codec": "mpeg4"}, id="mp4-video-aac"),
        pytest.param("matroska", "flac", {"rate": 22050, "video_codec": "libx264"}, id="mkv-h264-flac"),
        pytest.param("webm", "libopus", {"video_codec": "libvpx-vp9"}, id="webm-vp9-opus"),
    ],
)
def test_encoded_formats_decode(container_format: str, codec: str, options: dict) -> None:
    data = encode_media(container_format, codec, seconds=2.0, **options)
    samples = decode_audio(data, max_duration_s=LIMIT_S)
    # Encoder priming (AAC, MP3) may add a few tens of milliseconds.
    assert_audio(samples, 2.0, tolerance_s=0.1)
    assert dominant_frequency(samples) == pytest.approx(440, abs=2)


def test_stereo_is_downmixed_to_the_mean_of_the_channels() -> None:
    data = encode_media("wav", "pcm_s16le", rate=16000, layout="stereo", seconds=1.0)
    samples = decode_audio(data, max_duration_s=LIMIT_S)
    np.testing.assert_allclose(samples, tone(1.0, 16000), atol=1e-3)


def test_spooled_upload_file_decodes() -> None:
    import tempfile

    with tempfile.SpooledTemporaryFile(max_size=1024) as file:
        file.write((DATA / "silero_test.opus").read_bytes())
        assert_audio(decode_audio(file, max_duration_s=LIMIT_S), 8.06)


def test_garbage_is_refused() -> None:
    error = assert_error(b"this is not audio at all " * 100, 400, "invalid_audio")
    assert "decode" in error.message


def test_empty_bytes_are_refused() -> None:
    assert_error(b"", 400, "empty_audio")
    assert_error(io.BytesIO(b""), 400, "empty_audio")


@pytest.mark.parametrize("keep", [44, 1000, 0.5])
def test_truncated_flac_is_refused(keep: float) -> None:
    data = (DATA / "jfk.flac").read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    assert_error(data[:cut], 400, "invalid_audio")


def test_header_only_wav_is_empty_audio() -> None:
    assert_error(encode_wav(np.zeros(0, dtype=np.float32)), 400, "empty_audio")


def test_video_without_audio_is_refused() -> None:
    data = encode_media("mp4", None, video_codec="mpeg4", seconds=1.0)
    error = assert_error(data, 400, "invalid_audio")
    assert "no audio stream" in error.message


def test_too_long_audio_is_refused_from_the_container_duration_without_decoding(monkeypatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("decoded a file whose stated duration is already over the limit")

    monkeypatch.setattr(server.core.audio, "_decode_stream", never)
    assert_error(DATA / "silero_test.wav", 413, "audio_too_long", max_duration_s=10.0)


def test_too_long_audio_is_refused_while_decoding_when_the_duration_is_unknown() -> None:
    # A live-recorded WebM states no duration; the running count of samples must catch it.
    data = encode_media("webm", "libopus", layout="mono", seconds=5.0, seekable=False)
    with av.open(io.BytesIO(data)) as container:
        assert container.duration is None and container.streams.audio[0].duration is None
    assert_audio(decode_audio(data, max_duration_s=5.5), 5.0)
    assert_error(data, 413, "audio_too_long", max_duration_s=4.5)


def test_nonexistent_path_is_refused() -> None:
    assert_error(DATA / "missing.wav", 400, "invalid_audio")


def test_encode_wav_round_trips() -> None:
    samples = tone(1.5, SAMPLE_RATE, amplitude=0.8)
    data = encode_wav(samples)
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (1, 2, 16000, 24000)
    np.testing.assert_allclose(decode_audio(data, max_duration_s=LIMIT_S), samples, atol=2 / 32767)


def test_encode_wav_clips_and_keeps_the_rate() -> None:
    data = encode_wav(np.array([2.0, -2.0, 0.5], dtype=np.float32), sample_rate=8000)
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getframerate() == 8000
        pcm = np.frombuffer(wav.readframes(3), dtype="<i2")
    assert pcm.tolist() == [32767, -32767, 16384]


def test_encode_wav_refuses_multichannel_arrays() -> None:
    with pytest.raises(ValueError):
        encode_wav(np.zeros((2, 10), dtype=np.float32))


def test_plain_16k_mono_wav_skips_pyav_and_matches_it(monkeypatch: pytest.MonkeyPatch) -> None:
    wav = encode_wav(decode_audio(DATA / "jfk.flac", max_duration_s=60)[:48000])
    fast = decode_audio(wav, max_duration_s=60)
    opened: list[object] = []
    monkeypatch.setattr(server.core.audio.av, "open", lambda *a, **k: opened.append(a) or pytest.fail("PyAV used"))
    assert np.array_equal(decode_audio(io.BytesIO(wav), max_duration_s=60), fast)
    monkeypatch.undo()
    monkeypatch.setattr(server.core.audio, "_plain_wav", lambda *args: None)
    assert np.array_equal(decode_audio(wav, max_duration_s=60), fast)
    assert not opened


def test_plain_wav_limits_still_apply() -> None:
    wav = encode_wav(np.zeros(SAMPLE_RATE * 3, dtype=np.float32))
    assert_error(wav, 413, "audio_too_long", max_duration_s=2)
    assert decode_audio(wav, max_duration_s=3).size == SAMPLE_RATE * 3


# --- WAV files the stdlib fast path cannot read exactly ------------------------------------------


@pytest.mark.parametrize("cut", [480011, 480010, 1001])
def test_wav_cut_anywhere_decodes_what_it_holds(cut: int) -> None:
    """A WAV cut short (even at an odd byte count, mid-sample) decodes to its whole samples."""
    data = (DATA / "silero_test.wav").read_bytes()
    samples = decode_audio(data[:cut], max_duration_s=LIMIT_S)
    assert samples.size == (cut - 44) // 2
    np.testing.assert_array_equal(samples, decode_audio(data, max_duration_s=LIMIT_S)[: samples.size])


def test_wav_cut_inside_its_first_sample_is_refused() -> None:
    with pytest.raises(InputError) as info:
        decode_audio((DATA / "silero_test.wav").read_bytes()[:45], max_duration_s=LIMIT_S)
    assert info.value.status == 400


@pytest.mark.parametrize("format_tag", [0, 0x1234])
def test_wav_with_an_unknown_format_tag_is_invalid_audio(format_tag: int) -> None:
    data = bytearray((DATA / "silero_test.wav").read_bytes())
    fmt = data.index(b"fmt ")
    data[fmt + 8 : fmt + 10] = struct.pack("<H", format_tag)
    error = assert_error(bytes(data), 400, "invalid_audio")
    assert "codec" in error.message


@pytest.mark.parametrize(("rate", "layout"), [(16000, "mono"), (44100, "stereo")])
def test_streamed_wav_with_placeholder_sizes_decodes_to_its_length(rate: int, layout: str) -> None:
    """FFmpeg writing WAV to a pipe cannot go back to fill in the sizes and leaves 0xFFFFFFFF."""
    data = encode_media("wav", "pcm_s16le", rate=rate, layout=layout, seconds=11.0, seekable=False)
    assert struct.unpack("<I", data[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", data[data.index(b"data") + 4 :][:4])[0] == 0xFFFFFFFF
    samples = decode_audio(data, max_duration_s=7200)
    assert_audio(samples, 11.0, tolerance_s=0.01)
    assert dominant_frequency(samples) == pytest.approx(440, abs=2)
    assert_error(data, 413, "audio_too_long", max_duration_s=10)
