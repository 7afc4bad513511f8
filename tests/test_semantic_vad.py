"""`semantic_vad` with Smart Turn, through the `openai` SDK against the real vLLM and the real model:
a turn stays open through a mid-sentence pause longer than `server_vad`'s silence, and ends at the
sentence's end without waiting out its eagerness's longest wait."""

import json

import numpy as np
from realtime_helpers import (
    RATE,
    TRANSCRIPTION,
    collect,
    count,
    metric_value,
    of_type,
    openai_client,
    pcm16,
    send_paced,
)
from vad_helpers import load_recording

from server.core.settings import Settings
from server.realtime.config import SEMANTIC_COMPLETE
from server.realtime.semantic_turns import TurnJudge
from tests.conftest import EdgeServer
from vad import BatchedSmartTurn, SmartTurnModel, speech_segments

PAUSE_S = 1.5  # inside the sentence: longer than server_vad's silences, shorter than any longest wait


def sentence() -> tuple[np.ndarray, int]:
    """JFK's "ask not what your country can do for you, [1.5 s] ask what you can do for your
    country." with silence around; and where its speech ends, in ms. Smart Turn calls the audio up
    to the pause unfinished (about 0.1) and the whole finished (about 0.95): benchmarks/README.md."""
    audio = load_recording("jfk.flac")
    ask_not, for_you, ask_what = (audio[s.start_sample : s.end_sample] for s in speech_segments(audio)[1:])

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * RATE), np.float32)

    spoken = np.concatenate([silence(0.5), ask_not, for_you, silence(PAUSE_S), ask_what])
    return np.concatenate([spoken, silence(PAUSE_S)]), len(spoken) * 1000 // RATE


async def turns(edge: EdgeServer, audio: np.ndarray, eagerness: str, settle: int) -> list[dict]:
    async with openai_client(edge).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert (await conn.recv()).type == "session.created"
        detection = {"type": "semantic_vad", "eagerness": eagerness}
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": detection}},
            }
        )
        updated = json.loads(await conn.recv_bytes())
        assert updated["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
        await send_paced(lambda a: conn.input_audio_buffer.append(audio=a), pcm16(audio), 2 * RATE)
        return await collect(conn.recv_bytes, count(f"{TRANSCRIPTION}.completed", settle))


def checks(outcome: str) -> float:
    return metric_value("edge_realtime_turn_checks_total", outcome=outcome)


async def test_a_turn_ends_when_the_sentence_does_not_at_its_pause(edge: EdgeServer) -> None:
    audio, end_ms = sentence()
    complete, incomplete = checks("complete"), checks("incomplete")
    events = await turns(edge, audio, "low", settle=1)
    [started] = of_type(events, "input_audio_buffer.speech_started")
    [stopped] = of_type(events, "input_audio_buffer.speech_stopped")
    # Low eagerness waits up to 8 s, and only 1.5 s of silence was sent: the model ended the turn.
    assert abs(stopped["audio_end_ms"] - end_ms) <= 100, (stopped, end_ms)
    assert started["audio_start_ms"] < 500
    assert checks("complete") == complete + 1 and checks("incomplete") >= incomplete + 1


async def test_without_the_model_semantic_vad_is_server_vad_with_its_eagerness_silence(make_edge) -> None:
    audio, end_ms = sentence()
    events = await turns(make_edge(semantic_vad="server_vad"), audio, "low", settle=2)
    # Low eagerness as server_vad: 1000 ms of silence, so the 1.5 s pause ends the first turn.
    stopped = of_type(events, "input_audio_buffer.speech_stopped")
    assert len(stopped) == 2 and abs(stopped[1]["audio_end_ms"] - end_ms) <= 100


async def test_eagerness_sets_the_probability_that_ends_a_turn() -> None:
    """A cut of JFK's recording that the model reads between `high`'s probability (0.3) and `low`'s
    (0.7) is finished enough for `high`, not for `low`. The cut is searched for, not fixed: which
    cut reads so depends on the model's installed build."""
    audio = load_recording("jfk.flac")
    model = SmartTurnModel(Settings(_env_file=None).smart_turn_model)  # type: ignore[call-arg]
    cuts = [audio[:end] for end in range(8000, len(audio), 1000)]
    probabilities = model.predict(cuts)
    # Clear of both thresholds, so that batching's rounding cannot tip a verdict.
    floor, ceiling = SEMANTIC_COMPLETE["high"] + 0.05, SEMANTIC_COMPLETE["low"] - 0.05
    between = [c for c, p in zip(cuts, probabilities, strict=True) if floor <= p <= ceiling]
    assert between, f"no cut reads between the thresholds: {probabilities.round(2).tolist()}"
    judge = TurnJudge(BatchedSmartTurn(model))
    try:
        clip = between[0]
        assert await judge.finished(clip, "high")
        assert not await judge.finished(clip, "low")
    finally:
        judge.close()
