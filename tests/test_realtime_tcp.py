"""The raw TCP stream (`TCP_PORT`): PCM16 16 kHz bytes in over a plain socket, one JSON line per
turn out (the `/ws` transcription message), against a real edge and the session's real vLLM."""

import asyncio
import json
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from realtime_helpers import (
    JFK_1,
    JFK_2,
    RATE,
    TOLERANCE_MS,
    build_recording,
    edge_task_names,
    pcm16,
    wait_until,
)
from test_realtime_ws import seed_client_time

from server.core.audio import encode_wav
from tests.conftest import EdgeServer, free_port, metric_sum

TCP_KEY = "sk-tcp-good"
MESSAGE_KEYS = {"type", "text", "timestamp", "audio_start_ms", "audio_end_ms"}


@pytest.fixture(scope="module")
def tcp_edge(make_edge: Callable[..., EdgeServer]) -> EdgeServer:
    return make_edge(host="127.0.0.1", tcp_port=free_port())


@pytest.fixture(scope="module")
def strict_tcp_edge(make_edge: Callable[..., EdgeServer]) -> EdgeServer:
    return make_edge(host="127.0.0.1", tcp_port=free_port(), realtime_max_sessions=1, realtime_idle_timeout_s=1.5)


@pytest.fixture(scope="module")
def keyed_tcp_edge(make_edge: Callable[..., EdgeServer]) -> EdgeServer:
    """An edge whose TCP stream requires the key `sk-tcp-good` (named `tcp-user`), one session at a time."""
    return make_edge(host="127.0.0.1", tcp_port=free_port(), api_keys=f"tcp-user:{TCP_KEY}", api_key_max_sessions=1)


async def stream(port: int, data: bytes, first_line: bytes = b"", piece: int = 3333) -> list[dict[str, Any]]:
    """Send `first_line` and `data` (in odd-sized pieces, so samples split across writes), end the
    stream, and read every line until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(first_line)
    for i in range(0, len(data), piece):
        writer.write(data[i : i + piece])
        await writer.drain()
    writer.write_eof()
    lines = await read_lines(reader)
    writer.close()
    return lines


async def read_lines(reader: asyncio.StreamReader, timeout: float = 120) -> list[dict[str, Any]]:
    lines = []
    async with asyncio.timeout(timeout):
        while line := await reader.readline():
            lines.append(json.loads(line))
    return lines


def tcp_port(edge: EdgeServer) -> int:
    port = edge.settings.tcp_port
    assert port is not None
    return port


def check_turns(lines: list[dict[str, Any]], truth_ms: list[tuple[int, int]]) -> None:
    assert [line["type"] for line in lines] == ["transcription"] * len(truth_ms)
    for line, (start_ms, end_ms) in zip(lines, truth_ms, strict=True):
        assert set(line) == MESSAGE_KEYS
        assert isinstance(line["text"], str) and line["text"]
        assert abs(line["audio_start_ms"] - start_ms) <= TOLERANCE_MS
        assert abs(line["audio_end_ms"] - end_ms) <= TOLERANCE_MS
        seed_client_time(line["timestamp"])


async def test_tcp_stream_answers_each_turn_as_a_json_line(tcp_edge: EdgeServer) -> None:
    recording = build_recording([JFK_1, JFK_2])
    # A half sample at the end is dropped without harm.
    lines = await stream(tcp_port(tcp_edge), pcm16(recording.audio) + b"\x01")
    check_turns(lines, recording.truth_ms)


async def test_the_turn_in_progress_at_the_end_of_the_stream_is_not_lost(tcp_edge: EdgeServer) -> None:
    recording = build_recording([JFK_1, JFK_2])
    cut_ms = recording.truth_ms[1][1] - 200  # the stream ends while the second utterance goes on
    lines = await stream(tcp_port(tcp_edge), pcm16(recording.audio[: cut_ms * RATE // 1000]))
    check_turns(lines, [recording.truth_ms[0], (recording.truth_ms[1][0], cut_ms)])


def test_sox_piped_into_nc_as_in_the_readme(tcp_edge: EdgeServer, tmp_path: Path) -> None:
    for tool in ("sox", "nc"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing: apt-get install sox netcat-openbsd")
    recording = build_recording([JFK_1, JFK_2])
    wav = tmp_path / "speech.wav"
    wav.write_bytes(encode_wav(recording.audio))
    command = f"sox {wav} -t raw -r 16000 -e signed -b 16 -c 1 - | nc -N 127.0.0.1 {tcp_port(tcp_edge)}"
    result = subprocess.run(command, shell=True, capture_output=True, timeout=180, check=True)
    check_turns([json.loads(line) for line in result.stdout.splitlines()], recording.truth_ms)


async def key_usage(edge: EdgeServer) -> tuple[float, float]:
    """The `tcp-user` key's realtime sessions and audio seconds in the edge's `/metrics`."""
    text = (await asyncio.to_thread(httpx.get, f"{edge.url}/metrics", timeout=30)).text
    label = 'key="tcp-user"'
    return (
        metric_sum(text, "edge_key_realtime_sessions_total", label),
        metric_sum(text, "edge_key_audio_seconds_total", label),
    )


async def test_with_keys_the_first_line_is_the_key(keyed_tcp_edge: EdgeServer) -> None:
    port = tcp_port(keyed_tcp_edge)
    recording = build_recording([JFK_1])
    sessions_before, seconds_before = await key_usage(keyed_tcp_edge)
    check_turns(await stream(port, pcm16(recording.audio), f"{TCP_KEY}\n".encode()), recording.truth_ms)
    sessions, seconds = await key_usage(keyed_tcp_edge)
    assert sessions == sessions_before + 1
    assert seconds - seconds_before == pytest.approx(len(recording.audio) / RATE, abs=0.01)
    for first_line in (b"sk-wrong\n", b"\xff\xfe\x00\n", b"\n", b"", b"ek_forged.secret\n"):
        lines = await stream(port, pcm16(recording.audio), first_line)
        assert len(lines) == 1 and lines[0]["type"] == "error" and lines[0]["code"] == "invalid_api_key"
    assert await key_usage(keyed_tcp_edge) == (sessions, seconds)  # refused streams count nothing


async def test_the_key_session_cap_holds_on_the_tcp_stream(keyed_tcp_edge: EdgeServer) -> None:
    port = tcp_port(keyed_tcp_edge)
    recording = build_recording([JFK_1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{TCP_KEY}\n".encode() + pcm16(recording.audio[:RATE]))
    await writer.drain()
    await wait_until(lambda: keyed_tcp_edge.app.state.services.keys.sessions.open.get("tcp-user") == 1)
    lines = await stream(port, pcm16(recording.audio), f"{TCP_KEY}\n".encode())
    assert [(line["type"], line["code"]) for line in lines] == [("error", "too_many_sessions")]
    writer.write_eof()
    await read_lines(reader)
    writer.close()
    await wait_until(lambda: not keyed_tcp_edge.app.state.services.keys.sessions.open)
    check_turns(await stream(port, pcm16(recording.audio), f"{TCP_KEY}\n".encode()), recording.truth_ms)


async def test_an_abrupt_disconnect_leaves_nothing_behind(tcp_edge: EdgeServer) -> None:
    recording = build_recording([JFK_1, JFK_2])
    audio = pcm16(recording.audio)
    sock = socket.create_connection(("127.0.0.1", tcp_port(tcp_edge)))
    sock.sendall(audio[: len(audio) * 2 // 3])  # the first turn is over, the second is open
    await wait_until(lambda: tcp_edge.app.state.services.realtime_slots.active == 1)
    await asyncio.sleep(1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset, not an orderly end
    await wait_until(lambda: not [n for n in edge_task_names(tcp_edge) if n.startswith("realtime")], timeout=30)
    assert tcp_edge.app.state.services.realtime_slots.active == 0


async def test_session_cap_and_idle_timeout(strict_tcp_edge: EdgeServer) -> None:
    port = tcp_port(strict_tcp_edge)
    first_reader, first_writer = await asyncio.open_connection("127.0.0.1", port)
    first_writer.write(bytes(3200))  # 100 ms of silence, then nothing: the session goes idle
    await wait_until(lambda: strict_tcp_edge.app.state.services.realtime_slots.active == 1)
    second_reader, second_writer = await asyncio.open_connection("127.0.0.1", port)
    refused = await read_lines(second_reader, timeout=15)
    second_writer.close()
    assert [line["code"] for line in refused] == ["too_many_sessions"]
    closed = await read_lines(first_reader, timeout=15)
    first_writer.close()
    assert [line["code"] for line in closed] == ["idle_timeout"]
    await wait_until(lambda: strict_tcp_edge.app.state.services.realtime_slots.active == 0)
    await wait_until(lambda: not [n for n in edge_task_names(strict_tcp_edge) if n.startswith("realtime")])


async def test_a_session_ends_at_its_maximum_length(make_edge: Callable[..., EdgeServer]) -> None:
    edge = make_edge(host="127.0.0.1", tcp_port=free_port(), realtime_max_session_s=3)
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port(edge))

    async def keep_sending_silence() -> None:
        while True:
            writer.write(bytes(3200))
            await writer.drain()
            await asyncio.sleep(0.1)

    sending = asyncio.create_task(keep_sending_silence())
    try:
        lines = await read_lines(reader, timeout=30)
    finally:
        sending.cancel()
        writer.close()
    assert [line["code"] for line in lines] == ["session_expired"]
    await wait_until(lambda: edge.app.state.services.realtime_slots.active == 0)
