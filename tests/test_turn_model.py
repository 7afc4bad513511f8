"""Smart Turn v3.2 on the real model file: Whisper features, turn-completion answers, batching, bad input."""

from __future__ import annotations

import asyncio
from functools import cache

import numpy as np
import onnx
import onnxruntime
import pytest
from vad_helpers import RATE, load_recording, silence

from server.core.settings import Settings
from vad import BatchedSmartTurn, SmartTurnModel, speech_segments
from vad.log_mel import HOP, N_FFT, N_MELS, hz_to_mel, log_mel, mel_filters, power_spectrogram
from vad.qdq import fold_qdq
from vad.smart_turn import DEFAULT_MODEL_PATH, WINDOW_SAMPLES, model_window


@cache
def model() -> SmartTurnModel:
    return SmartTurnModel()


@cache
def float32_model() -> SmartTurnModel:
    return SmartTurnModel(precision="float32")


@cache
def jfk_pauses() -> tuple[list[np.ndarray], np.ndarray]:
    """JFK's "And so, my fellow Americans | ask not | what your country can do for you | ask what you can
    do for your country." cut 200 ms after each of its four speech regions (a VAD's end-of-speech wait):
    three pauses inside the sentence, then its end."""
    audio = load_recording("jfk.flac")
    segments = speech_segments(audio)
    assert len(segments) == 4
    cuts = [audio[: min(len(audio), s.end_sample + RATE // 5)] for s in segments]
    return cuts[:3], cuts[3]


def test_settings_default_is_where_serve_sh_installs_the_model() -> None:
    assert Settings.model_fields["smart_turn_model"].default == str(DEFAULT_MODEL_PATH)
    assert DEFAULT_MODEL_PATH.is_file(), "./serve.sh installs the model (install_smart_turn)"


def test_features_have_whispers_shape_and_scale() -> None:
    speech = load_recording("jfk.flac")[: 5 * RATE]
    windows = np.stack([model_window(speech), model_window(np.random.default_rng(1).normal(0, 0.1, 3 * RATE))])
    features = log_mel(windows)
    assert features.shape == (2, N_MELS, WINDOW_SAMPLES // HOP) == (2, 80, 800)
    assert features.dtype == np.float32
    for row in features:
        # log10 clamped 8 below its maximum, then (x + 4) / 4: a range of at most 2.
        assert row.max() - row.min() <= 2.0 + 1e-6
        assert -1.5 < row.min() and row.max() < 2.5
    # Zero padding at the start is the clamped floor; speech reaches well above it.
    head = features[0, :, :200]
    assert np.allclose(head, features[0].min(), atol=0.05)
    assert features[0, :, -400:].max() - features[0].min() > 1.5


def test_mel_scale_and_filters_are_slaneys() -> None:
    np.testing.assert_allclose(hz_to_mel(np.array([0.0, 200.0, 1000.0, 6400.0])), [0.0, 3.0, 15.0, 42.0])
    filters = mel_filters()
    assert filters.shape == (N_MELS, N_FFT // 2 + 1)
    assert (filters >= 0).all()
    # Area-normalised triangles: each filter sums to about 1 / bin width (40 Hz), as far as the
    # 40 Hz bins sample a triangle (coarsely for the narrow low ones).
    areas = filters[20:].sum(axis=1) * (RATE / N_FFT)
    np.testing.assert_allclose(areas, 1.0, rtol=0.1)
    assert abs(areas.mean() - 1.0) < 0.01
    assert (np.diff(filters.argmax(axis=1)) >= 0).all()


def test_stft_and_features_match_a_direct_dft_of_one_frame() -> None:
    audio = load_recording("jfk.flac")[RATE : 9 * RATE]
    window = model_window(audio)
    frame_index = 400

    # Independently: normalise, reflect-pad by 200, take frame 400, periodic Hann, DFT by definition.
    x = (window - window.mean()) / np.sqrt(window.var() + 1e-7)
    padded = np.concatenate([x[1:201][::-1], x, x[-201:-1][::-1]]).astype(np.float64)
    frame = padded[frame_index * HOP : frame_index * HOP + N_FFT]
    n = np.arange(N_FFT)
    hann = np.sin(np.pi * n / N_FFT) ** 2
    k = np.arange(N_FFT // 2 + 1)[:, None]
    dft = (frame * hann * np.exp(-2j * np.pi * k * n / N_FFT)).sum(axis=1)
    power = np.abs(dft) ** 2

    ours = power_spectrogram(x[None])[0, frame_index]
    np.testing.assert_allclose(ours, power, rtol=1e-6, atol=1e-9 * power.max())

    features = log_mel(window[None])[0]
    column = np.log10(np.maximum(mel_filters() @ power, 1e-10))
    column = (np.maximum(column, features.max() * 4.0 - 4.0 - 8.0) + 4.0) / 4.0
    np.testing.assert_allclose(features[:, frame_index], column, atol=1e-5)


def test_end_of_sentence_reads_more_complete_than_pauses_inside_it() -> None:
    inside, end = jfk_pauses()
    americans, ask_not, for_you, end_prob = model().predict([*inside, end])
    assert end_prob > 0.9
    assert ask_not < 0.1 and for_you < 0.1
    # The model hears "And so, my fellow Americans |" as finished too: a falling, sentence-final
    # cadence on a vocative; it is counted as a miss in benchmarks/turn_model_bench.py.
    assert americans > 0.5


def test_float32_precision_has_no_quantization_left_and_reads_the_clear_cases_alike() -> None:
    folded = fold_qdq(onnx.load(DEFAULT_MODEL_PATH))
    ops = {node.op_type for node in folded.graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear"} and {"MatMul", "Conv"} <= ops
    used = {name for node in folded.graph.node for name in node.input}
    weights = [init for init in folded.graph.initializer if init.name in used and len(init.dims) >= 2]
    assert weights and all(init.data_type == onnx.TensorProto.FLOAT for init in weights)

    inside, end = jfk_pauses()
    quantized, unquantized = model().predict([*inside, end]), float32_model().predict([*inside, end])
    assert (unquantized[1:3] < 0.1).all() and unquantized[3] > 0.9
    np.testing.assert_allclose(unquantized, quantized, atol=0.15)


def test_float32_readings_do_not_jump_when_the_features_move_by_a_millionth() -> None:
    """The int8 graph rounds its activations at every layer, so its in-between readings can jump
    by a quarter for such a nudge (benchmarks/README.md); the folded graph's stay put."""
    inside, end = jfk_pauses()
    audios = [*inside, end, load_recording("silero_test.wav")[: 6 * RATE]]
    features = log_mel(np.stack([model_window(a) for a in audios]))
    base = float32_model().predict_features(features)
    rng = np.random.default_rng(3)
    for _ in range(3):
        nudged = (features * (1 + 1e-6 * rng.standard_normal(features.shape))).astype(np.float32)
        np.testing.assert_allclose(float32_model().predict_features(nudged), base, atol=1e-3)


def _qdq_matmul(x: np.ndarray, weight: np.ndarray, axis_scales: np.ndarray, zero: np.ndarray) -> onnx.ModelProto:
    """X -> Q -> DQ -> MatMul(DQ(int8 weight, per-column scales and zero points)) -> Y."""
    h, t = onnx.helper, onnx.TensorProto
    inits = [
        onnx.numpy_helper.from_array(weight, "w"),
        onnx.numpy_helper.from_array(axis_scales, "w_scale"),
        onnx.numpy_helper.from_array(zero, "w_zero"),
        onnx.numpy_helper.from_array(np.float32(0.05), "x_scale"),
        onnx.numpy_helper.from_array(np.uint8(128), "x_zero"),
    ]
    nodes = [
        h.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
        h.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
        h.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], axis=1),
        h.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    graph = h.make_graph(
        nodes,
        "qdq",
        [h.make_tensor_value_info("x", t.FLOAT, list(x.shape))],
        [h.make_tensor_value_info("y", t.FLOAT, [x.shape[0], weight.shape[1]])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])


def test_folding_dequantizes_per_axis_weights_and_drops_the_activation_rounding() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (3, 4)).astype(np.float32)
    weight = rng.integers(-128, 128, (4, 5)).astype(np.int8)
    scales = np.array([0.01, 0.02, 0.03, 0.04, 0.05], np.float32)
    zero = np.array([0, 1, -2, 3, 0], np.int8)
    folded = fold_qdq(_qdq_matmul(x, weight, scales, zero))
    assert [node.op_type for node in folded.graph.node] == ["MatMul"]
    session = onnxruntime.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    np.testing.assert_allclose(y, x @ ((weight.astype(np.float32) - zero) * scales), rtol=1e-5)


def test_folding_keeps_the_name_of_an_output_made_by_an_activation_pair() -> None:
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    model = _qdq_matmul(x, np.zeros((4, 2), np.int8), np.ones(2, np.float32), np.zeros(2, np.int8))
    model.graph.output.append(onnx.helper.make_tensor_value_info("xd", onnx.TensorProto.FLOAT, [2, 4]))
    folded = fold_qdq(model)
    session = onnxruntime.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"])
    _, xd = session.run(["y", "xd"], {"x": x})
    np.testing.assert_array_equal(xd, x)  # not rounded to the 0.05 steps any more


def test_folding_refuses_a_graph_it_does_not_cover() -> None:
    model = _qdq_matmul(
        np.zeros((1, 4), np.float32), np.zeros((4, 2), np.int8), np.ones(2, np.float32), np.zeros(2, np.int8)
    )
    # A quantized activation that reaches an op other than DequantizeLinear cannot be folded.
    model.graph.node.append(onnx.helper.make_node("Identity", ["xq"], ["xq_copy"]))
    with pytest.raises(ValueError, match="feeds something other than a DequantizeLinear"):
        fold_qdq(model)


def test_batch_equals_one_at_a_time() -> None:
    inside, end = jfk_pauses()
    long = np.concatenate([load_recording("silero_test.wav")[: 12 * RATE], silence(0.3)])
    audios = [*inside, end, long, load_recording("silero_test.mp3"), end[:4000].astype(np.float64)]
    batched = model().predict(audios)
    single = np.array([model().predict([a])[0] for a in audios])
    assert batched.shape == (len(audios),) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert ((batched >= 0) & (batched <= 1)).all()


def test_last_eight_seconds_padded_at_the_start() -> None:
    audio = np.random.default_rng(2).normal(0, 0.1, 10 * RATE).astype(np.float32)
    np.testing.assert_array_equal(model_window(audio), audio[-WINDOW_SAMPLES:])
    short = model_window(audio[:RATE])
    assert not short[: WINDOW_SAMPLES - RATE].any()
    np.testing.assert_array_equal(short[-RATE:], audio[:RATE])


@pytest.mark.parametrize(
    ("audio", "error", "message"),
    [
        (np.zeros(0, dtype=np.float32), ValueError, "empty"),
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), ValueError, "NaN"),
        (np.array([0.1, np.inf], dtype=np.float32), ValueError, "NaN or infinite"),
        (np.zeros(1600, dtype=np.int16), TypeError, "floating-point"),
        ([0.0] * 1600, TypeError, "floating-point"),
        (np.zeros((2, 1600), dtype=np.float32), TypeError, "1-D"),
    ],
)
def test_bad_input_is_refused_clearly(audio: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        model().predict([audio])  # type: ignore[list-item]


def test_empty_batch_and_missing_file() -> None:
    assert model().predict([]).shape == (0,)
    with pytest.raises(FileNotFoundError, match=r"serve\.sh"):
        SmartTurnModel("/nonexistent/smart-turn.onnx")


class CountingModel(SmartTurnModel):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def predict_windows(self, windows: np.ndarray) -> np.ndarray:
        self.batches.append(len(windows))
        return super().predict_windows(windows)


async def test_concurrent_completions_share_model_calls() -> None:
    inside, end = jfk_pauses()
    audios = [*inside, end] * 2
    counting = CountingModel()
    batcher = BatchedSmartTurn(counting, max_batch=5)
    try:
        results = await asyncio.gather(*(batcher.completion(a) for a in audios))
        np.testing.assert_allclose(results, model().predict(audios), atol=1e-5)
        # All eight are queued before the first run starts; runs take up to 5.
        assert counting.batches == [5, 3]

        # One caller's bad input fails only that caller.
        outcomes = await asyncio.gather(
            batcher.completion(end), batcher.completion(np.zeros(0, dtype=np.float32)), return_exceptions=True
        )
        assert isinstance(outcomes[1], ValueError)
        assert outcomes[0] == pytest.approx(results[3], abs=1e-5)
    finally:
        batcher.close()
    with pytest.raises(RuntimeError):
        await batcher.completion(end)
