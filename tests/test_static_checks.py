"""ruff (lint and format), mypy and the layer contract (import-linter, `[tool.importlinter]` in
pyproject.toml) over the project's code: findings fail the suite."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHECKS = {
    "ruff lint": [sys.executable, "-m", "ruff", "check", "server", "vad", "benchmarks", "tests"],
    "ruff format": [sys.executable, "-m", "ruff", "format", "--check", "server", "vad", "benchmarks", "tests"],
    "mypy": [sys.executable, "-m", "mypy"],
    "layer contract": [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
}


@pytest.mark.parametrize("name", CHECKS)
def test_static_check_passes(name: str) -> None:
    result = subprocess.run(CHECKS[name], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{name} found problems:\n{result.stdout}\n{result.stderr}"
