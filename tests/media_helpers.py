"""Media made in the tests with PyAV (no ffmpeg binary), shared by the audio and fetch tests."""

import io

import av
import numpy as np

VIDEO_SIZE = (64, 48)
VIDEO_RATE = 10


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    """A float32 sine wave."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode_media(
    container_format: str,
    audio_codec: str | None,
    *,
    rate: int = 48000,
    layout: str = "stereo",
    seconds: float = 2.0,
    video_codec: str | None = None,
    seekable: bool = True,
) -> bytes:
    """Encode a 440 Hz tone (and, with `video_codec`, a few frames of video) into a container.

    With `audio_codec=None` the file has only the video track. With `seekable=False` the muxer
    writes to a pipe-like sink and cannot go back to record the duration, as in a live recording
    (a browser's MediaRecorder WebM has no duration either).
    """
    buffer = io.BytesIO() if seekable else _Pipe()
    with av.open(buffer, "w", format=container_format) as container:
        video = None
        if video_codec:
            video = container.add_stream(video_codec, rate=VIDEO_RATE)
            video.width, video.height = VIDEO_SIZE
            video.pix_fmt = "yuv420p"
        if audio_codec:
            audio = container.add_stream(audio_codec, rate=rate, layout=layout)
            for frame in _audio_frames(tone(seconds, rate), audio, rate, layout):
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
        if video is not None:
            for i in range(int(seconds * VIDEO_RATE)):
                image = np.full((VIDEO_SIZE[1], VIDEO_SIZE[0], 3), (i * 25) % 256, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = i
                container.mux(video.encode(frame))
            container.mux(video.encode(None))
    return buffer.getvalue()


class _Pipe(io.RawIOBase):
    """A write-only, non-seekable sink."""

    def __init__(self) -> None:
        self._data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        self._data += data
        return len(data)

    def getvalue(self) -> bytes:
        return bytes(self._data)


def _audio_frames(signal: np.ndarray, stream: av.AudioStream, rate: int, layout: str):
    """Cut `signal` into frames in the encoder's sample format, the same tone on every channel."""
    sample_format = stream.codec_context.format
    channels = len(av.AudioLayout(layout).channels)
    frame_size = stream.codec_context.frame_size or 1024
    for start in range(0, signal.size, frame_size):
        chunk = signal[start : start + frame_size]
        planes = np.tile(chunk, (channels, 1)) if sample_format.is_planar else np.repeat(chunk, channels)[None, :]
        if sample_format.name.startswith("s16"):
            planes = (planes * 32767).astype(np.int16)
        elif sample_format.name.startswith("s32"):
            planes = (planes * 2_000_000_000).astype(np.int32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes), format=sample_format.name, layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        yield frame
