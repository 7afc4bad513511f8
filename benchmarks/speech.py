"""Benchmark audio built from the test recordings, with known speech boundaries.

Utterances are the speech regions `vad.speech_segments` finds in tests/data/silero_test.wav and
jfk.flac, cut out and kept only if the streaming detector (OpenAI `server_vad` defaults) hears
each as exactly one turn. A realtime session joins them with 1.5–2 s of silence, so the truth is
known: one turn per utterance, ending where the utterance's audio ends.
"""

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soxr

from server.core.audio import SAMPLE_RATE, decode_audio, encode_wav
from vad import SpeechStopped as VADStopped
from vad import StreamingDetector, StreamParams, speech_segments

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SOURCES = ("silero_test.wav", "jfk.flac")
PAUSE_S = (1.5, 2.0)
TAIL_S = 1.5


@lru_cache
def recording(name: str) -> np.ndarray:
    """A test recording at 16 kHz mono float32."""
    return decode_audio(DATA / name, max_duration_s=3600)


def _one_turn(audio: np.ndarray) -> bool:
    padded = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), audio, np.zeros(SAMPLE_RATE, np.float32)])
    detector = StreamingDetector(StreamParams())
    events = detector.feed(padded) + detector.flush()
    return sum(isinstance(event, VADStopped) for event in events) == 1


@lru_cache
def utterances() -> tuple[np.ndarray, ...]:
    """Speech regions of the recordings that are each heard as one turn, 16 kHz."""
    found = []
    for name in SOURCES:
        audio = recording(name)
        for segment in speech_segments(audio):
            piece = audio[segment.start_sample : segment.end_sample]
            if _one_turn(piece):
                found.append(piece)
    return tuple(found)


@dataclass(frozen=True)
class SessionPlan:
    """One session's audio as indices into shared chunk messages, and where its speech lies."""

    chunks: list[int]
    turns_ms: list[tuple[int, int]]  # (start, end) of each utterance, ms from the session's first audio


class SessionAudio:
    """Realtime session audio as pre-encoded `input_audio_buffer.append` messages.

    Every utterance is resampled to 24 kHz PCM16 and cut into `chunk_ms` chunks once; sessions
    share these messages and differ only in their order and pauses, so hundreds of sessions cost
    no more memory than one.
    """

    RATE = 24000

    def __init__(self, chunk_ms: int, encode: Callable[[bytes], str]) -> None:
        self.chunk_ms = chunk_ms
        samples_per_chunk = self.RATE * chunk_ms // 1000
        self.messages: list[str] = [encode(bytes(samples_per_chunk * 2))]  # index 0: silence
        self._utterances: list[tuple[list[int], int]] = []
        for piece in utterances():
            pcm = soxr.resample(piece, SAMPLE_RATE, self.RATE)
            duration_ms = len(pcm) * 1000 // self.RATE
            padded = np.zeros(-(-len(pcm) // samples_per_chunk) * samples_per_chunk, np.float32)
            padded[: len(pcm)] = pcm
            pcm16 = (np.clip(padded, -1, 1) * 32767).astype("<i2").tobytes()
            step = samples_per_chunk * 2
            first = len(self.messages)
            self.messages += [encode(pcm16[i : i + step]) for i in range(0, len(pcm16), step)]
            self._utterances.append((list(range(first, len(self.messages))), duration_ms))

    def plan(self, seconds: float, seed: int) -> SessionPlan:
        """`seconds` of audio: a random lead-in, then utterances (in a rotated order, over again for
        a long session) with pauses."""
        rng = random.Random(seed)
        total = int(seconds * 1000 // self.chunk_ms)
        tail = int(TAIL_S * 1000 // self.chunk_ms)
        chunks = [0] * rng.randrange(0, 2000 // self.chunk_ms + 1)
        turns: list[tuple[int, int]] = []
        order = list(range(len(self._utterances)))
        rotation = rng.randrange(len(order))
        for index in itertools.cycle(order[rotation:] + order[:rotation]):
            ids, duration_ms = self._utterances[index]
            if len(chunks) + len(ids) + tail > total:
                break
            start_ms = len(chunks) * self.chunk_ms
            turns.append((start_ms, start_ms + duration_ms))
            chunks += ids
            chunks += [0] * int(rng.uniform(*PAUSE_S) * 1000 // self.chunk_ms)
        chunks += [0] * max(total - len(chunks), 0)
        return SessionPlan(chunks, turns)


def long_recording(seconds: float) -> np.ndarray:
    """`seconds` of the recordings one after another with 1 s pauses (16 kHz)."""
    pause = np.zeros(SAMPLE_RATE, np.float32)
    pieces, length = [], 0
    target = int(seconds * SAMPLE_RATE)
    while length < target:
        for name in SOURCES:
            pieces += [recording(name), pause]
            length += len(recording(name)) + len(pause)
    return np.concatenate(pieces)[:target]


def long_file(seconds: float, directory: Path) -> Path:
    """A 16 kHz mono PCM16 WAV of `long_recording(seconds)`, written once."""
    path = directory / f"long_{int(seconds)}s.wav"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_wav(long_recording(seconds)))
    return path


def short_clip() -> bytes:
    """The first utterance of jfk.flac as a 16 kHz WAV (about 2 s): the edge sends it to vLLM whole."""
    audio = recording("jfk.flac")
    first = speech_segments(audio)[0]
    return encode_wav(audio[first.start_sample : first.end_sample])
