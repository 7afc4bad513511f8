"""Streaming turn detection: OpenAI ``server_vad``-style events for one stream.

:class:`TurnTracker` is the state machine on frame probabilities. It is the
offline segmenter's state machine run online, without the over-long-segment
cut: a turn starts at the first frame >= ``threshold`` and
ends where a run of frames below the exit threshold began, once that run has
lasted ``silence_duration_ms``. Turns no longer than ``min_speech_duration_ms``
are suppressed, which delays ``SpeechStarted`` until the turn is known to be
long enough (no delay with the default 0, like OpenAI's ``server_vad``).

With ``pause_ms`` > 0, a quiet run inside an announced turn that has lasted
that long (shorter than the silence that ends a turn) is reported as
``SpeechPaused`` at the sample where the turn would end if the silence
lasts, and speech after it as ``SpeechResumed``: a listener can start on the
turn's end early (an eager transcription, a turn-completion check) and drop
that work if the speaker goes on.

Frames are the stream's consecutive 512-sample blocks counted from its first
sample, whatever the chunk sizes fed, so results do not depend on chunking.
A trailing partial frame is never evaluated (``flush`` does not pad it): the
offline segmenter pads and evaluates it, which can only matter for speech
starting in the last 32 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vad.framing import Framer
from vad.model import FRAME_SAMPLES, SAMPLE_RATE, SileroModel
from vad.offline import exit_threshold

_SAMPLES_PER_MS = SAMPLE_RATE // 1000


@dataclass(frozen=True)
class StreamParams:
    """OpenAI ``server_vad`` parameters plus silero's exit threshold and minimum turn length."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    neg_threshold: float | None = None  # None: max(threshold - 0.15, 0.01)
    min_speech_duration_ms: int = 0
    pause_ms: int = 0  # 0: no pause events

    @property
    def exit_threshold(self) -> float:
        return exit_threshold(self.threshold, self.neg_threshold)


@dataclass(frozen=True)
class SpeechStarted:
    """Start of a turn, moved back by ``prefix_padding_ms`` (clamped at 0)."""

    sample: int


@dataclass(frozen=True)
class SpeechStopped:
    """End of a turn: where the silence that ended it began (or the stream end on flush)."""

    sample: int


@dataclass(frozen=True)
class SpeechPaused:
    """A turn's speech has paused for ``pause_ms``; the turn ends at ``sample`` if the silence lasts."""

    sample: int


@dataclass(frozen=True)
class SpeechResumed:
    """Speech again after a ``SpeechPaused``, at ``sample``: the turn goes on."""

    sample: int


Event = SpeechStarted | SpeechStopped | SpeechPaused | SpeechResumed


class TurnTracker:
    def __init__(self, params: StreamParams) -> None:
        self._enter = params.threshold
        self._leave = params.exit_threshold
        self._prefix = params.prefix_padding_ms * _SAMPLES_PER_MS
        self._silence = params.silence_duration_ms * _SAMPLES_PER_MS
        self._min_speech = params.min_speech_duration_ms * _SAMPLES_PER_MS
        self._pause = params.pause_ms * _SAMPLES_PER_MS if 0 < params.pause_ms < params.silence_duration_ms else None
        self.reset()

    def reset(self) -> None:
        self._frames = 0
        self._start: int | None = None
        self._quiet_from: int | None = None
        self._announced = False
        self._paused = False

    def step(self, probs) -> list[Event]:
        """Advance over the next frames' probabilities."""
        events: list[Event] = []
        for p in probs:
            pos = self._frames * FRAME_SAMPLES
            self._frames += 1
            if p >= self._enter:
                self._quiet_from = None
                if self._paused:
                    self._paused = False
                    events.append(SpeechResumed(pos))
                if self._start is None:
                    self._start, self._announced = pos, False
            elif self._start is not None and p < self._leave:
                if self._quiet_from is None:
                    self._quiet_from = pos
                if pos - self._quiet_from >= self._silence:
                    if self._announced:
                        events.append(SpeechStopped(self._quiet_from))
                    self._start, self._quiet_from, self._paused = None, None, False
                    continue
                if self._pause is not None and self._announced and not self._paused:
                    if pos - self._quiet_from >= self._pause:
                        self._paused = True
                        events.append(SpeechPaused(self._quiet_from))
            if self._start is not None and not self._announced:
                # The turn will end no earlier than this bound; once that makes
                # it long enough, it can be announced.
                earliest_end = self._quiet_from if self._quiet_from is not None else pos + FRAME_SAMPLES
                if earliest_end - self._start > self._min_speech:
                    events.append(self._started())
        return events

    def finish(self, stream_end: int) -> list[Event]:
        """End of stream: an open turn ends at ``stream_end``."""
        events: list[Event] = []
        if self._start is not None:
            if not self._announced and stream_end - self._start > self._min_speech:
                events.append(self._started())
            if self._announced:
                events.append(SpeechStopped(stream_end))
        self.reset()
        return events

    def _started(self) -> SpeechStarted:
        self._announced = True
        assert self._start is not None
        return SpeechStarted(max(0, self._start - self._prefix))


class StreamingDetector:
    """Synchronous single-stream detector running its own model calls (batch of one)."""

    def __init__(self, params: StreamParams = StreamParams(), model: SileroModel | None = None):
        self._model = model or SileroModel()
        self._framer = Framer()
        self._tracker = TurnTracker(params)
        self._state = SileroModel.initial_state()

    def feed(self, samples: np.ndarray) -> list[Event]:
        """Feed 16 kHz float32 samples (any count); return the events they complete."""
        probs = []
        for row in self._framer.push(samples):
            p, self._state = self._model.run(row[None], self._state)
            probs.append(float(p[0]))
        return self._tracker.step(probs)

    def flush(self) -> list[Event]:
        """End of stream: close an open turn at the last sample fed, then start afresh."""
        events = self._tracker.finish(self._framer.samples_seen)
        self.reset()
        return events

    def reset(self) -> None:
        self._framer.reset()
        self._tracker.reset()
        self._state = SileroModel.initial_state()
