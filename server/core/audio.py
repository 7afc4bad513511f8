"""Decode any audio (or the audio track of a video) to 16 kHz mono float32 with PyAV.

Every failure a client can cause (not audio, truncated, no audio track, an unknown codec, no
samples at all, too long) becomes an `InputError` (the caller names the request field); no PyAV
exception leaves this module. Decoding is CPU-bound and
synchronous: callers run it in a worker thread.
"""

import io
import os
import wave
from typing import BinaryIO

import av
import numpy as np

from server.core.errors import InputError
from vad import SAMPLE_RATE  # the edge works at the VAD's and Voxtral's rate

# FFmpeg reads up to 5 MB while probing stream parameters, which is slow even for a short
# WAV. Almost every container states its audio parameters in its first few KiB, so probe that
# much first and only fall back to FFmpeg's default when the audio parameters are still unknown.
_QUICK_PROBE = {"probesize": "8192"}

# Without a bound, libswresample downmixes stereo to mono as 0.707 * (L + R) into float output,
# which can exceed full scale; normalising the mix matrix to 1 makes it the mean of the channels.
_RESAMPLER_OPTIONS = {"rematrix_maxval": "1.0"}

# Durations from container headers can be estimates (e.g. MP3 from its bitrate), so refusing a
# file before decoding it allows this much slack; the count of decoded samples is exact.
_ESTIMATE_SLACK = 1.01


def decode_audio(source: bytes | str | os.PathLike | BinaryIO, *, max_duration_s: float) -> np.ndarray:
    """Decode the first audio stream of `source` to a C-contiguous float32 mono array at 16 kHz.

    `source` is the file's bytes, a path, or a seekable binary file object (read from its start).
    Raises `InputError` 400 for anything that is not decodable audio and 413 when the audio is
    longer than `max_duration_s`; the latter is noticed from the container's stated duration or,
    failing that, while decoding, so an over-long file is never decoded in full.
    """
    size = _size(source)
    if size == 0:
        raise _empty("The audio file is empty.")
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    max_samples = int(max_duration_s * SAMPLE_RATE)
    plain = _plain_wav(source, size, max_samples, max_duration_s)
    if plain is not None:
        return plain
    try:
        with _open(source) as container:
            stream = container.streams.audio[0]
            _refuse_long_estimate(container, stream, max_duration_s)
            samples = _decode_stream(container, stream, max_samples, max_duration_s)
    except av.FFmpegError as exc:
        raise InputError(
            f"Could not decode the audio file ({exc.strerror or type(exc).__name__}): it is not a supported "
            "audio or video format, or it is corrupt or truncated.",
            code="invalid_audio",
        ) from exc
    if samples.size == 0:
        raise _empty("The audio file contains no audio samples.")
    return samples


def _plain_wav(
    source: str | os.PathLike | BinaryIO, size: int | None, max_samples: int, max_duration_s: float
) -> np.ndarray | None:
    """Read a WAV that already is 16 kHz mono PCM16 with the stdlib, or return None.

    Such files need no decoding or resampling, and opening them with FFmpeg was most of the
    edge's own time on short clips. Only a file this reads exactly is read here: anything else
    (other rates, stereo, float, extensible headers, a data size the file does not hold, such as
    a truncated file or FFmpeg's streamed WAV whose sizes are placeholders) goes through PyAV,
    which copes with all of them. `size` is the file's size in bytes, when known.
    """
    if not isinstance(source, (str, os.PathLike)):
        source.seek(0)
    try:
        # `wave` opens (and closes) a path itself, and leaves a file object it is given open.
        with wave.open(os.fspath(source) if isinstance(source, os.PathLike) else source, "rb") as wav:
            if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getcomptype()) != (
                1,
                2,
                SAMPLE_RATE,
                "NONE",
            ):
                return None
            frames = wav.getnframes()
            if size is None or frames * 2 > size:
                return None
            if frames > max_samples:
                raise _too_long(max_duration_s)
            pcm = wav.readframes(frames)
    except (wave.Error, EOFError, OSError):
        return None
    finally:
        if not isinstance(source, (str, os.PathLike)):
            source.seek(0)
    if len(pcm) != frames * 2:
        return None
    if frames == 0:
        raise _empty("The audio file contains no audio samples.")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def encode_wav(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encode mono float samples in [-1, 1] (clipped) as a 16-bit PCM WAV file."""
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {samples.shape}")
    pcm = np.rint(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _size(source: bytes | str | os.PathLike | BinaryIO) -> int | None:
    """The size of `source` in bytes, or None for a path that cannot be read."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    if hasattr(source, "seek"):
        return source.seek(0, os.SEEK_END)
    try:
        return os.path.getsize(source)
    except OSError:
        return None


def _open(source: str | os.PathLike | BinaryIO) -> av.container.InputContainer:
    """Open `source` with a quick probe, probing in full if that fails or leaves the audio unknown."""
    try:
        container = _open_with(source, _QUICK_PROBE)
    except av.FFmpegError:
        container = None
    if container is not None:
        if _audio_known(container):
            return container
        container.close()
    container = _open_with(source, {})
    if not container.streams.audio:
        container.close()
        raise InputError("The file has no audio stream.", code="invalid_audio")
    if container.streams.audio[0].codec_context is None:
        container.close()
        raise InputError("The file's audio is in a codec this server cannot decode.", code="invalid_audio")
    return container


def _open_with(source: str | os.PathLike | BinaryIO, options: dict[str, str]) -> av.container.InputContainer:
    if hasattr(source, "seek"):
        source.seek(0)
    return av.open(source, "r", options=options, metadata_errors="replace")


def _audio_known(container: av.container.InputContainer) -> bool:
    if not container.streams.audio:
        return False
    codec = container.streams.audio[0].codec_context
    return codec is not None and codec.sample_rate > 0 and codec.channels > 0


def _refuse_long_estimate(container: av.container.InputContainer, stream: av.AudioStream, max_s: float) -> None:
    if stream.duration is not None and stream.time_base is not None:
        estimate = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        estimate = container.duration / av.time_base
    else:
        return
    if estimate > max_s * _ESTIMATE_SLACK:
        raise _too_long(max_s)


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream, max_samples: int, max_s: float
) -> np.ndarray:
    """Decode, downmix and resample `stream`, collecting chunks and concatenating them once.

    A stream may change its sample rate or layout midway (chained Ogg, concatenated MP3), which a
    PyAV resampler refuses, so a new resampler is started whenever the input parameters change.
    """
    chunks: list[np.ndarray] = []
    count = 0
    resampler: av.AudioResampler | None = None
    input_params: tuple[str, str, int] | None = None

    def collect(frames: list[av.AudioFrame]) -> None:
        nonlocal count
        for out in frames:
            chunk = out.to_ndarray().reshape(-1)
            count += chunk.size
            if count > max_samples:
                raise _too_long(max_s)
            chunks.append(chunk)

    for frame in container.decode(stream):
        params = (frame.format.name, frame.layout.name, frame.sample_rate)
        if params != input_params:
            if resampler is not None:
                collect(resampler.resample(None))
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE, options=_RESAMPLER_OPTIONS)
            input_params = params
        assert resampler is not None
        collect(resampler.resample(frame))
    if resampler is not None:
        collect(resampler.resample(None))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def _too_long(max_s: float) -> InputError:
    return InputError(f"The audio is longer than the maximum of {max_s:g} seconds.", code="audio_too_long", status=413)


def _empty(message: str) -> InputError:
    return InputError(message, code="empty_audio")
