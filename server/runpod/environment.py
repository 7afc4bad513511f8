"""RunPod's environment conventions, mapped onto the launcher's settings in one place.

A RunPod user configures a vLLM endpoint with `MODEL_NAME`, `MAX_MODEL_LEN`,
`GPU_MEMORY_UTILIZATION`, `MAX_NUM_SEQS`, `TENSOR_PARALLEL_SIZE` and `HF_TOKEN` (which the Hugging
Face hub reads by itself). They become `VOXTRAL_MODEL` and flags in `VLLM_ARGS`; values the user
set explicitly (`VOXTRAL_MODEL`, a flag already in `VLLM_ARGS`, `HF_HOME`) always win. Weights are
cached in the image when it was built with a model baked in, otherwise on the network volume
when one is attached, so that workers do not download them again at every cold start.

`python -m server.runpod.environment CMD...` applies the mapping and execs CMD (the container's
serve mode uses it; the worker applies it itself).
"""

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

RUNPOD_VOLUME = Path("/runpod-volume")
# Where the Dockerfile puts weights baked in at build time (build argument BAKE_MODEL).
BAKED_HF_HOME = Path("/models/huggingface-cache")

VLLM_FLAGS = {
    "MAX_MODEL_LEN": "--max-model-len",
    "GPU_MEMORY_UTILIZATION": "--gpu-memory-utilization",
    "MAX_NUM_SEQS": "--max-num-seqs",
    "TENSOR_PARALLEL_SIZE": "--tensor-parallel-size",
}


def _has_flag(args: list[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in args)


def _hf_home(volume: Path, baked: Path) -> str | None:
    if baked.is_dir() and any(baked.iterdir()):
        return str(baked)
    if volume.is_dir():
        return str(volume / "huggingface-cache")
    return None


def runpod_environment(
    env: Mapping[str, str], *, volume: Path = RUNPOD_VOLUME, baked: Path = BAKED_HF_HOME
) -> dict[str, str]:
    """The variables to set so that `env`'s RunPod conventions reach the launcher."""
    updates: dict[str, str] = {}
    model = env.get("MODEL_NAME", "").strip()
    if model and not env.get("VOXTRAL_MODEL"):
        updates["VOXTRAL_MODEL"] = model
    args = shlex.split(env.get("VLLM_ARGS", ""))
    added = [
        item
        for name, flag in VLLM_FLAGS.items()
        if (value := env.get(name, "").strip()) and not _has_flag(args, flag)
        for item in (flag, value)
    ]
    if added:
        updates["VLLM_ARGS"] = shlex.join(args + added)
    if not env.get("HF_HOME") and (home := _hf_home(volume, baked)):
        updates["HF_HOME"] = home
    return updates


def apply() -> None:
    """Apply the mapping to this process's environment (and so to the vLLM it starts)."""
    os.environ.update(runpod_environment(os.environ))


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m server.runpod.environment COMMAND [ARGS...]")
    apply()
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
