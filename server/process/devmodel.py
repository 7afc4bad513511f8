"""Write a tiny random-weight Voxtral in Mistral's format, for development and tests.

Model hubs are out of reach on build machines, so the test suite serves this directory with
`--load-format dummy`: vLLM initialises random weights and exercises its real Voxtral code path
(audio encoder, tokenizer, sampling, streaming) at a fraction of the cost. The text it produces is
noise.

`--realtime` writes the tiny counterpart of Voxtral Mini 4B Realtime instead: a causal audio
encoder with RoPE and a sliding window, time-conditioned norms, and a tokenizer in streaming mode
(480 ms delay), so that vLLM picks `VoxtralRealtimeGeneration` and serves `/v1/realtime`.

Usage: `python -m server.process.devmodel [--realtime] DIR` (add `--serve PORT` to serve it with vLLM until
interrupted, and `--api-key KEY` to make that vLLM require a key)
"""

import argparse
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from mistral_common.tokens.tokenizers.base import SpecialTokens

from server.core.settings import Settings
from server.process.launcher import VLLMProcess

# Smallest shape seen working with vLLM's CPU attention (head_dim 16 is refused).
DIM = 128
LAYERS = 2
HEADS = 2
HEAD_DIM = 64
HIDDEN = 256
NUM_SPECIAL_TOKENS = 100
NUM_VOCAB_TOKENS = 2000
SOURCE_VOCAB = "tekken_240911.json"
SERVED_NAME = "voxtral-tiny"
# float32 and eager mode: the CPU build's fastest start for a model this small. A long context
# lets tests keep requests running for many seconds (random weights rarely stop on their own).
TINY_VLLM_ARGS = "--max-model-len 32768 --dtype float32 --enforce-eager"
REALTIME_SERVED_NAME = "voxtral-realtime-tiny"
# One realtime generation feeds one token per 80 ms step and stops at `--max-model-len`.
REALTIME_MAX_MODEL_LEN = 2048
REALTIME_VLLM_ARGS = "--dtype float32 --enforce-eager"
# The streaming settings of the published Voxtral Mini 4B Realtime tokenizer.
REALTIME_AUDIO = {
    "transcription_format": "streaming",
    "transcription_delay_ms": 480,
    "streaming_look_ahead_ms": 2.5,
    "streaming_look_back_ms": 52.5,
    "streaming_n_left_pad_tokens": 32,
}


def tokenizer_json(*, realtime: bool = False) -> dict:
    """A Tekken v7 tokenizer: the first real vocabulary entries plus every special token.

    Realtime: the audio section streams (no `chunk_length_s`); `[STREAMING_PAD]` is among the
    special tokens already.
    """
    source = resources.files("mistral_common") / "data" / SOURCE_VOCAB
    full = json.loads(source.read_text(encoding="utf-8"))
    vocab = full["vocab"][:NUM_VOCAB_TOKENS]
    special = [{"rank": i, "token_str": str(tok), "is_control": True} for i, tok in enumerate(SpecialTokens)]
    assert len(special) <= NUM_SPECIAL_TOKENS
    audio: dict = {
        "sampling_rate": 16000,
        "frame_rate": 12.5,
        "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
    }
    audio.update(REALTIME_AUDIO if realtime else {"chunk_length_s": 30.0})
    return {
        "config": {
            "pattern": full["config"]["pattern"],
            "num_vocab_tokens": NUM_VOCAB_TOKENS,
            "default_vocab_size": NUM_VOCAB_TOKENS + NUM_SPECIAL_TOKENS,
            "default_num_special_tokens": NUM_SPECIAL_TOKENS,
            "version": "v7",
        },
        "vocab": vocab,
        "special_tokens": special,
        "audio": audio,
    }


def params_json(*, realtime: bool = False) -> dict:
    """Decoder and Whisper-style audio encoder arguments, as in Voxtral's params.json.

    Realtime: `causal: true` in the encoder is what makes vLLM pick `VoxtralRealtimeGeneration`;
    `max_position_embeddings` sizes the encoder's RoPE table (the default is huge).
    """
    params = {
        "dim": DIM,
        "n_layers": LAYERS,
        "head_dim": HEAD_DIM,
        "hidden_dim": HIDDEN,
        "n_heads": HEADS,
        "n_kv_heads": HEADS,
        "rope_theta": 1_000_000.0,
        "norm_eps": 1e-5,
        "vocab_size": NUM_VOCAB_TOKENS + NUM_SPECIAL_TOKENS,
        "max_position_embeddings": 32768,
        "multimodal": {
            "whisper_model_args": {
                "encoder_args": {
                    "audio_encoding_args": {
                        "sampling_rate": 16000,
                        "num_mel_bins": 128,
                        "hop_length": 160,
                        "window_size": 400,
                    },
                    "dim": DIM,
                    "n_layers": LAYERS,
                    "head_dim": HEAD_DIM,
                    "hidden_dim": HIDDEN,
                    "n_heads": HEADS,
                    "vocab_size": 51866,
                    "max_source_positions": 1500,
                },
                "downsample_args": {"downsample_factor": 4},
            }
        },
    }
    if realtime:
        params.update(ada_rms_norm_t_cond=True, ada_rms_norm_t_cond_dim=32, max_position_embeddings=4096)
        encoder = params["multimodal"]["whisper_model_args"]["encoder_args"]  # type: ignore[index]
        del encoder["max_source_positions"]
        encoder.update(causal=True, pos_embed="rope", sliding_window=750)
        encoder["audio_encoding_args"]["global_log_mel_max"] = 1.5
    return params


def write_model(directory: Path, *, realtime: bool = False) -> Path:
    """Write `params.json` and `tekken.json` into `directory` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "params.json").write_text(json.dumps(params_json(realtime=realtime), indent=2))
    (directory / "tekken.json").write_text(json.dumps(tokenizer_json(realtime=realtime)))
    return directory


@contextmanager
def serve_tiny_model(
    directory: Path,
    *,
    port: int,
    max_num_seqs: int = 16,
    startup_timeout_s: float = 600,
    realtime: bool = False,
    max_model_len: int = REALTIME_MAX_MODEL_LEN,
    scheduling_policy: str = "priority",
    api_key: str | None = None,
) -> Iterator[str]:
    """Serve the tiny model, written to `directory`, with a real vLLM; yield vLLM's base URL.

    The test suite and the benchmarks both start their vLLM this way. `realtime` serves the tiny
    realtime model instead (under `REALTIME_SERVED_NAME`), with `max_model_len`: the length of one
    realtime generation in 80 ms steps. `scheduling_policy` is vLLM's: "priority" (as the launcher
    starts it) or "fcfs" (vLLM's default). `api_key` makes vLLM require that key (its `--api-key`).
    """
    args = f"{REALTIME_VLLM_ARGS} --max-model-len {max_model_len}" if realtime else TINY_VLLM_ARGS
    settings = Settings(  # type: ignore[call-arg]  # pydantic-settings takes _env_file
        _env_file=None,
        voxtral_model=str(write_model(directory, realtime=realtime)),
        served_model_name=REALTIME_SERVED_NAME if realtime else SERVED_NAME,
        vllm_load_format="dummy",
        vllm_port=port,
        vllm_args=f"{args} --max-num-seqs {max_num_seqs} --scheduling-policy {scheduling_policy}",
        vllm_cpu_kvcache_gb=1,
    )
    if api_key:  # without one, VLLM_API_KEY's (if set) as before
        settings = settings.model_copy(update={"vllm_api_key": api_key})
    process = VLLMProcess(settings, echo=False)
    process.start()
    try:
        process.wait_healthy(startup_timeout_s)
        yield f"http://{settings.vllm_host}:{settings.vllm_port}"
    finally:
        process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--realtime", action="store_true", help="write the tiny realtime (streaming) model")
    parser.add_argument(
        "--max-model-len", type=int, default=REALTIME_MAX_MODEL_LEN, help="realtime: steps in one generation"
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help="also serve it with vLLM on PORT until interrupted")
    parser.add_argument("--api-key", help="with --serve: the key vLLM requires (its --api-key)")
    args = parser.parse_args()
    if args.serve is None:
        print(write_model(args.directory, realtime=args.realtime))
        return
    with serve_tiny_model(
        args.directory, port=args.serve, realtime=args.realtime, max_model_len=args.max_model_len, api_key=args.api_key
    ) as url:
        print(url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
