"""`semantic_vad`: a turn ends when the speaker has finished, not after a fixed silence.

Silero finds the candidate ends: a pause inside a turn (`vad.SpeechPaused`, after
`REALTIME_EAGER_PAUSE_MS` of quiet, or `PAUSE_MS` with eager finals off). At each one the turn's
audio so far is put to Smart Turn (`vad.BatchedSmartTurn`, one batched model call for the sessions
asking at the same moment); a probability of at least `SEMANTIC_COMPLETE[eagerness]` ends the turn
where its pause began. Otherwise the turn stays open through the silence, until speech resumes or the longest wait
for its `eagerness` has passed (OpenAI's 8, 4 and 2 s for low, medium and high; auto is medium):
that wait is the VAD's silence window (`SEMANTIC_MAX_WAIT_MS`). The model is asked once per pause,
never per frame: its cost per call is in benchmarks/README.md ("Turn completion model").

With `SEMANTIC_VAD=server_vad` (or no model file) no model runs: `semantic_vad` is `server_vad`
with a silence of `SEMANTIC_SILENCE_MS[eagerness]`, as the protocol layer sets it.
"""

import logging
import time
from dataclasses import replace
from typing import Literal

import numpy as np

from server.core import metrics
from server.realtime.config import SEMANTIC_COMPLETE, SEMANTIC_MAX_WAIT_MS
from vad import BatchedSmartTurn, StreamParams

log = logging.getLogger("edge.realtime")

Eagerness = Literal["low", "medium", "high", "auto"]
PAUSE_MS = 200


def stream_params(detection: StreamParams, eagerness: Eagerness, pause_ms: int) -> StreamParams:
    """The VAD's parameters for a semantic turn: the longest wait as its silence window, pauses
    reported (`pause_ms`, or `PAUSE_MS` if that is 0)."""
    return replace(detection, silence_duration_ms=SEMANTIC_MAX_WAIT_MS[eagerness], pause_ms=pause_ms or PAUSE_MS)


class TurnJudge:
    """Whether a turn's audio so far sounds finished; counted in `edge_realtime_turn_checks_total`."""

    def __init__(self, model: BatchedSmartTurn) -> None:
        self._model = model

    async def finished(self, audio: np.ndarray, eagerness: Eagerness) -> bool:
        started = time.perf_counter()
        try:
            probability = await self._model.completion(audio)
        except (RuntimeError, ValueError, TypeError) as exc:
            # The turn then ends by its longest wait, as if the model had said "not yet".
            metrics.TURN_CHECKS.labels("failed").inc()
            log.warning("turn-completion check failed: %s", exc)
            return False
        done = probability >= SEMANTIC_COMPLETE[eagerness]
        metrics.TURN_CHECKS.labels("complete" if done else "incomplete").inc()
        metrics.TURN_CHECK_SECONDS.observe(time.perf_counter() - started)
        log.debug("turn-completion check: %.2f over %.2f s of audio", probability, len(audio) / 16000)
        return done

    def close(self) -> None:
        self._model.close()
