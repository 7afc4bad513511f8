"""Word times from a realtime stream's deltas, and whole files transcribed through `/v1/realtime`.

Each delta is one 80 ms step; its text stands for the 80 ms of audio `spoken_span` gives (the step
heard the audio up to `heard_until`, and the model writes a word `DELAY_STEPS` after hearing it).
A word runs from the span of the step that wrote its first character to the end of the span of the
step that wrote its last one, clipped to the audio. Whether the model itself places words that
precisely is a property of its weights (see the README).
"""

import asyncio
from collections.abc import Iterable

import numpy as np

from server.backend.vllm_realtime.errors import RealtimeBackendError
from server.backend.vllm_realtime.probe import RealtimeBackend
from server.backend.vllm_realtime.stream import RealtimeStream, SegmentDone, StreamDelta, spoken_span
from server.core.audio import SAMPLE_RATE
from server.core.words import Word


def words_from_deltas(deltas: Iterable[StreamDelta], *, audio_end: int) -> list[Word]:
    """Split the deltas' text at whitespace into timed words; positions are 16 kHz samples.

    A generation's last steps (vLLM's right padding) stand for no audio past the generation's end,
    which is where the next generation begins (or `audio_end`)."""
    deltas = list(deltas)
    starts = sorted({d.generation_start for d in deltas})
    ends = dict(zip(starts, [*starts[1:], audio_end], strict=False))
    words: list[Word] = []
    text = ""
    start = end = 0

    def close() -> None:
        nonlocal text
        if text:
            first = min(max(start, 0), audio_end)
            words.append(Word(text, first / SAMPLE_RATE, max(min(end, audio_end), first) / SAMPLE_RATE))
        text = ""

    for delta in deltas:
        limit = ends[delta.generation_start]
        span_start, span_end = (min(p, limit) for p in spoken_span(delta.heard_until))
        for char in delta.text:
            if char.isspace():
                close()
                continue
            if not text:
                start = span_start
            text += char
            end = span_end
    close()
    return words


async def transcribe_with_words(backend: RealtimeBackend, audio: np.ndarray) -> tuple[str, list[Word]]:
    """Stream a whole recording (16 kHz float32) through `/v1/realtime` as fast as vLLM takes it.

    Raises `RealtimeBackendError` if the stream fails.
    """
    deltas: list[StreamDelta] = []
    result: asyncio.Future[SegmentDone] = asyncio.get_running_loop().create_future()

    def finished(done: SegmentDone) -> None:
        if not result.done():
            result.set_result(done)

    def failed(exc: RealtimeBackendError) -> None:
        if not result.done():
            result.set_exception(exc)

    stream = RealtimeStream(
        backend.url,
        backend.model,
        max_model_len=backend.max_model_len,
        api_key=backend.api_key,
        on_delta=deltas.append,
        on_done=finished,
        on_error=failed,
    )
    try:
        stream.start_segment("file", 0)
        stream.feed(audio)
        stream.end_segment()
        done = await result
    finally:
        await stream.aclose()
    return done.text, words_from_deltas(deltas, audio_end=len(audio))
