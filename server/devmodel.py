"""Write a tiny random-weight Voxtral in Mistral's format, for development and tests.

Model hubs are out of reach on build machines, so the test suite serves this directory with
`--load-format dummy`: vLLM initialises random weights and exercises its real Voxtral code path
(audio encoder, tokenizer, sampling, streaming) at a fraction of the cost. The text it produces is
noise.

Usage: `python -m server.devmodel DIR` (add `--serve PORT` to serve it with vLLM until interrupted)
"""

import argparse
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from mistral_common.tokens.tokenizers.base import SpecialTokens

from server.launcher import VLLMProcess
from server.settings import Settings

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


def tokenizer_json() -> dict:
    """A Tekken v7 tokenizer: the first real vocabulary entries plus every special token."""
    source = resources.files("mistral_common") / "data" / SOURCE_VOCAB
    full = json.loads(source.read_text(encoding="utf-8"))
    vocab = full["vocab"][:NUM_VOCAB_TOKENS]
    special = [{"rank": i, "token_str": str(tok), "is_control": True} for i, tok in enumerate(SpecialTokens)]
    assert len(special) <= NUM_SPECIAL_TOKENS
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
        "audio": {
            "sampling_rate": 16000,
            "frame_rate": 12.5,
            "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400},
            "chunk_length_s": 30.0,
        },
    }


def params_json() -> dict:
    """Decoder and Whisper-style audio encoder arguments, as in Voxtral's params.json."""
    return {
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


def write_model(directory: Path) -> Path:
    """Write `params.json` and `tekken.json` into `directory` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "params.json").write_text(json.dumps(params_json(), indent=2))
    (directory / "tekken.json").write_text(json.dumps(tokenizer_json()))
    return directory


@contextmanager
def serve_tiny_model(
    directory: Path,
    *,
    port: int,
    max_num_seqs: int = 16,
    startup_timeout_s: float = 600,
    scheduling_policy: str = "priority",
) -> Iterator[str]:
    """Serve the tiny model, written to `directory`, with a real vLLM; yield vLLM's base URL.

    The test suite and the benchmarks both start their vLLM this way. `scheduling_policy` is
    vLLM's: "priority" (as the launcher starts it) or "fcfs" (vLLM's default).
    """
    settings = Settings(  # type: ignore[call-arg]  # pydantic-settings takes _env_file
        _env_file=None,
        voxtral_model=str(write_model(directory)),
        served_model_name=SERVED_NAME,
        vllm_load_format="dummy",
        vllm_port=port,
        vllm_args=f"{TINY_VLLM_ARGS} --max-num-seqs {max_num_seqs} --scheduling-policy {scheduling_policy}",
        vllm_cpu_kvcache_gb=1,
    )
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
    parser.add_argument("--serve", type=int, metavar="PORT", help="also serve it with vLLM on PORT until interrupted")
    args = parser.parse_args()
    if args.serve is None:
        print(write_model(args.directory))
        return
    with serve_tiny_model(args.directory, port=args.serve) as url:
        print(url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
