"""Smoke run of every benchmark (`python -m benchmarks --quick`) against the test session's vLLM.

Proves that `./serve.sh bench` works end to end: the stand-in backend, the edge as a subprocess,
the realtime load client, the file and overhead benchmarks, and their JSON and PNG output.
Numbers are not checked beyond sanity: the machine running the tests is busy.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--quick", "--seconds", "6", "--long-seconds", "90", "--overhead-requests", "10"]


def bench(command: str, results: Path, *extra: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "benchmarks", command, *QUICK, "--results-dir", str(results), *extra],
        cwd=ROOT,
        check=True,
        timeout=240,
    )


def load(results: Path, name: str) -> dict:
    assert (results / f"{name}.png").stat().st_size > 0
    assert (results / f"{name}.md").read_text().startswith("|")
    return json.loads((results / f"{name}.json").read_text())


@pytest.mark.timeout(300)
def test_capacity_with_the_stand_in_backend(tmp_path: Path) -> None:
    bench("capacity", tmp_path)
    data = load(tmp_path, "realtime_capacity")
    [point] = data["points"]
    assert point["sessions_dropped"] == 0
    assert point["turns_expected"] > 0
    assert point["turns_completed_matched"] == point["turns_expected"]
    assert point["processes"]["edge"]["cpu_s"] > 0


@pytest.mark.timeout(300)
def test_realtime_files_and_overhead_against_vllm(tmp_path: Path, vllm_url: str) -> None:
    for command in ("realtime", "files", "overhead"):
        bench(command, tmp_path, "--vllm-url", vllm_url)
    realtime = load(tmp_path, "realtime_vllm")
    assert realtime["points"][0]["turns_completed_matched"] > 0
    files = load(tmp_path, "files")
    assert all(row["edge"]["status"] == 200 for row in files["recordings"])
    assert files["long_files"][0]["edge_parallel"]["status"] == 200
    [vad] = load(tmp_path, "files_vad")["files"]
    assert vad["same_segments"] and vad["segments"] > 0
    overhead = load(tmp_path, "overhead")
    assert [p["concurrency"] for p in overhead["points"]] == [1, 32]
    assert all(p["requests_per_path"] == 10 for p in overhead["points"])


@pytest.mark.timeout(400)
def test_mixed_load_and_fairness_against_vllm(tmp_path: Path, vllm_url: str) -> None:
    for command in ("mixed", "fairness"):
        bench(command, tmp_path, "--vllm-url", vllm_url, "--file-seconds", "90")
    mixed = load(tmp_path, "mixed")
    assert [row["mode"]["name"] for row in mixed["rows"]] == ["shipped defaults", "adaptive budget off"]
    for row in mixed["rows"]:
        assert row["alone"]["turns_expected"] > 0 and row["with_file"]["file"]["status"] == 200
        assert row["files_alone"]["file"]["deltas_received"] > 0
    fairness = load(tmp_path, "fairness")
    assert [row["file_budget"] for row in fairness["rows"]] == [4, 1_000_000]
    assert all(len(row["with_file_s"]) == 1 for row in fairness["rows"])


@pytest.mark.timeout(300)
def test_conversation_sessions_against_vllm(tmp_path: Path, vllm_url: str) -> None:
    bench("conversation", tmp_path, "--vllm-url", vllm_url, "--long-speed", "6")
    data = load(tmp_path, "conversation")
    for sweep in data["sweeps"]:  # the edge alone, then with the real vLLM
        [point] = sweep["points"]
        assert point["sessions_dropped"] == 0 and point["turns_heard"] > 0
        assert point["turns_answered"] > 0, "a spoken turn got a streamed reply"
        assert point["responses_counted"] >= point["turns_answered"], "the edge's first-delta histogram counted them"
        assert point["edge_share_s"]["p50"] is not None and point["backend_first_delta_s"]["p50"] is not None
    long = data["long_conversation"]
    assert long["turns_answered"] > 0 and long["memory"]["samples"], long


@pytest.mark.timeout(300)
def test_time_to_final_segment_by_turn_detection_against_vllm(tmp_path: Path, vllm_url: str) -> None:
    bench("ttfs", tmp_path, "--vllm-url", vllm_url)
    rows = load(tmp_path, "ttfs")["rows"]
    assert len(rows) == 7 and all(row["sessions_dropped"] == 0 and row["turns_completed"] > 0 for row in rows)
    assert all(row["edge_cpu_ms_per_session_s"] > 0 for row in rows)
    by_name = {row["mode"]["name"]: row for row in rows}
    assert by_name["server_vad 500 ms"]["eager"]["used"] == 0
    assert by_name["server_vad 500 ms + eager finals"]["eager"]["used"] > 0
    for precision in ("", " float32"):
        row = by_name[f"semantic_vad high (Smart Turn{precision}), eager at the pause"]
        assert sum(row["turn_checks"].values()) > 0


@pytest.mark.timeout(300)
def test_webrtc_against_websocket(tmp_path: Path, vllm_url: str) -> None:
    bench("webrtc", tmp_path, "--vllm-url", vllm_url)
    rows = load(tmp_path, "webrtc")["rows"]
    assert [(row["transport"], row["sessions"]) for row in rows] == [("websocket", 1), ("webrtc", 1)]
    for row in rows:
        assert not row["sessions_dropped"] and row["turns_completed"] == row["turns_sent"] > 0
        assert row["edge_cpu_s"] > 0


@pytest.mark.timeout(300)
def test_cold_start_runs(tmp_path: Path, vllm_url: str) -> None:
    """With --vllm-url the session's (warm) vLLM stands in for fresh ones: the code runs, the numbers mean nothing."""
    bench("cold", tmp_path, "--vllm-url", vllm_url)
    rows = load(tmp_path, "cold")["rows"]
    assert [row["warmup_requests"] for row in rows] == [0, 2]
    for row in rows:
        assert len(row["file_s"]) == len(row["chat_s"]) == 4 and row["live_ttfs_s"]
