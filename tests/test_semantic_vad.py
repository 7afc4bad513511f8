"""`semantic_vad` with Smart Turn, through the `openai` SDK against the real vLLM and the real model:
a turn stays open through a mid-sentence pause longer than `server_vad`'s silence, and ends at the
sentence's end without waiting out its eagerness's longest wait."""

import json
import logging

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


def eager(outcome: str) -> float:
    return metric_value("edge_realtime_eager_transcriptions_total", outcome=outcome)


async def test_a_turn_ends_when_the_sentence_does_not_at_its_pause(edge: EdgeServer) -> None:
    audio, end_ms = sentence()
    complete, incomplete = checks("complete"), checks("incomplete")
    used = eager("used")
    events = await turns(edge, audio, "low", settle=1)
    [started] = of_type(events, "input_audio_buffer.speech_started")
    [stopped] = of_type(events, "input_audio_buffer.speech_stopped")
    # Low eagerness waits up to 8 s, and only 1.5 s of silence was sent: the model ended the turn.
    assert abs(stopped["audio_end_ms"] - end_ms) <= 100, (stopped, end_ms)
    assert started["audio_start_ms"] < 500
    assert checks("complete") == complete + 1 and checks("incomplete") >= incomplete + 1
    # The eager transcription started at the pause, beside the check, and was the final.
    assert eager("used") == used + 1


async def test_after_check_the_eager_transcription_waits_for_the_turn_model(make_edge) -> None:
    """SEMANTIC_EAGER=after_check: the turn that ends at its pause is transcribed once it ends, and
    no transcription starts for a pause before the model has called it unfinished."""
    audio, end_ms = sentence()
    complete = checks("complete")
    used, discarded = eager("used"), eager("discarded")
    events = await turns(make_edge(semantic_eager="after_check"), audio, "low", settle=1)
    [stopped] = of_type(events, "input_audio_buffer.speech_stopped")
    [completed] = of_type(events, f"{TRANSCRIPTION}.completed")
    assert abs(stopped["audio_end_ms"] - end_ms) <= 100, (stopped, end_ms)
    assert completed["item_id"] == stopped["item_id"]
    assert checks("complete") == complete + 1
    # The unfinished pause, sent faster than real time, was over before its check answered, so it
    # started nothing either.
    assert eager("used") == used and eager("discarded") == discarded


async def test_float32_precision_ends_the_same_turn_at_the_same_place(make_edge, caplog) -> None:
    """SMART_TURN_PRECISION=float32 (the quantization folded away): the pause inside the sentence
    still reads unfinished and its end finished."""
    audio, end_ms = sentence()
    complete, incomplete = checks("complete"), checks("incomplete")
    caplog.set_level(logging.INFO, logger="edge")
    edge = make_edge(smart_turn_precision="float32")
    assert "semantic_vad: Smart Turn (float32)" in caplog.text
    events = await turns(edge, audio, "low", settle=1)
    [stopped] = of_type(events, "input_audio_buffer.speech_stopped")
    assert abs(stopped["audio_end_ms"] - end_ms) <= 100, (stopped, end_ms)
    assert checks("complete") == complete + 1 and checks("incomplete") >= incomplete + 1


async def test_without_the_model_semantic_vad_is_server_vad_with_its_eagerness_silence(make_edge) -> None:
    audio, end_ms = sentence()
    events = await turns(make_edge(semantic_vad="server_vad"), audio, "low", settle=2)
    # Low eagerness as server_vad: 1000 ms of silence, so the 1.5 s pause ends the first turn.
    stopped = of_type(events, "input_audio_buffer.speech_stopped")
    assert len(stopped) == 2 and abs(stopped[1]["audio_end_ms"] - end_ms) <= 100


async def test_eagerness_sets_the_probability_that_ends_a_turn() -> None:
    """A cut of JFK's recording that the model reads between `high`'s probability (0.3) and `low`'s
    (0.7) is finished enough for `high`, not for `low`.

    The cut is searched for, not fixed: readings between the two come only where speech is ending,
    and there the int8 model is chaotic (a change of one part in a million to its features moves
    them by up to 0.2; benchmarks/README.md, "Turn completion model"), so which cut reads so
    differs between CPUs. Each candidate is read alone, as the judge reads it, so the verdicts
    come from the same arithmetic as the search."""
    audio = load_recording("jfk.flac")
    model = SmartTurnModel(Settings(_env_file=None).smart_turn_model)  # type: ignore[call-arg]
    ends = [segment.end_sample for segment in speech_segments(audio)]
    cuts = [audio[: end + step] for end in ends for step in range(-1600, 1601, 320)]
    probabilities = [float(model.predict([cut])[0]) for cut in cuts]
    middle = (SEMANTIC_COMPLETE["high"] + SEMANTIC_COMPLETE["low"]) / 2
    clip, probability = min(zip(cuts, probabilities, strict=True), key=lambda c: abs(c[1] - middle))
    assert SEMANTIC_COMPLETE["high"] < probability < SEMANTIC_COMPLETE["low"], (
        f"no cut reads between the thresholds: {[round(p, 2) for p in probabilities]}"
    )
    judge = TurnJudge(BatchedSmartTurn(model))
    try:
        assert await judge.finished(clip, "high")
        assert not await judge.finished(clip, "low")
    finally:
        judge.close()
