"""What a client sends before the app sees a request is bounded and answered in OpenAI's shape
(`server.api.wire_limits`): endless headers, headers that dribble in, a WebSocket handshake the parser
refuses, bytes that are not HTTP, and a WebSocket client that stops answering pings.

Raw sockets, since no HTTP client library sends such requests.
"""

import base64
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from server.api import wire_limits
from server.api.wire_limits import MAX_HEAD_BYTES
from tests.conftest import EdgeServer

HANDSHAKE = (
    "GET /v1/realtime?intent=transcription HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
)


def connect(edge: EdgeServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", edge.settings.port), timeout=30)
    sock.settimeout(30)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response the edge sends before it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def assert_openai_error(body: bytes, code: str) -> None:
    error = json.loads(body)["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]


def test_a_request_whose_headers_never_end_is_refused_at_the_bound(edge: EdgeServer) -> None:
    """Unbounded before: uvicorn's httptools protocol kept every header line of a request that never
    ended its head (400 MB of headers grew the edge by 420 MB) and never answered."""
    line = b"X-Padding: " + b"a" * 1000 + b"\r\n"
    with connect(edge) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: edge\r\n")
        sock.sendall(line * (MAX_HEAD_BYTES // len(line) + 2))  # the head goes on: no blank line
        status, headers, body = read_response(sock)
    assert status == 431 and headers["connection"] == "close"
    assert_openai_error(body, "headers_too_large")
    assert httpx.get(f"{edge.url}/health", timeout=30).status_code == 200


def test_a_request_whose_head_dribbles_in_is_cut_off(edge: EdgeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unbounded before: a client sending its headers slowly (or stopping halfway) held its
    connection for as long as it liked."""
    monkeypatch.setattr(wire_limits, "HEAD_TIMEOUT_S", 2.0)
    with connect(edge) as sock:
        sock.settimeout(15)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\nX-Slow: ")
        status, _, body = read_response(sock)
    assert status == 408
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and error["type"] == "timeout_error"


def test_a_kept_alive_connections_next_head_is_timed_too(edge: EdgeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire_limits, "HEAD_TIMEOUT_S", 2.0)
    with connect(edge) as sock:
        sock.settimeout(15)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])
        while len(body) < length:
            body += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\nX-Slow: ")  # the next request stalls
        status, _, body = read_response(sock)
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_a_connection_that_sends_nothing_is_closed(edge: EdgeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held for ever before: uvicorn's keep-alive timeout starts only after a first response."""
    monkeypatch.setattr(wire_limits, "HEAD_TIMEOUT_S", 2.0)
    with connect(edge) as sock:
        sock.settimeout(15)
        assert sock.recv(100) == b""  # closed, with nothing to answer


def test_the_head_timeout_runs_only_while_a_head_arrives(edge: EdgeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire_limits, "HEAD_TIMEOUT_S", 2.0)
    with httpx.Client(base_url=edge.url, timeout=30) as client:
        assert client.get("/openapi.json").status_code == 200
        time.sleep(3)  # idle on the kept-alive connection, within uvicorn's keep-alive timeout (5 s)
        assert client.get("/openapi.json").status_code == 200


def test_large_headers_under_the_bound_are_served(edge: EdgeServer) -> None:
    cookie = "session=" + "c" * (MAX_HEAD_BYTES // 2)
    with httpx.Client(base_url=edge.url, timeout=30) as client:
        for _ in range(3):  # one kept-alive connection: the bound counts each request's own head
            assert client.get("/openapi.json", headers={"Cookie": cookie}).status_code == 200


def test_bytes_that_are_not_http_get_an_openai_shaped_400(edge: EdgeServer) -> None:
    with connect(edge) as sock:
        sock.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        status, headers, body = read_response(sock)
    assert status == 400 and headers["content-type"] == "application/json"
    assert_openai_error(body, "invalid_http_request")


def test_a_handshake_the_websocket_parser_refuses_is_answered(edge: EdgeServer) -> None:
    """A header line over 8 kB passes the HTTP parser but not `websockets`' handshake parser;
    uvicorn left such a connection open with no answer until the client gave up."""
    key = base64.b64encode(os.urandom(16)).decode()
    with connect(edge) as sock:
        sock.settimeout(15)
        sock.sendall((HANDSHAKE.format(key=key) + f"X-Large: {'l' * 9000}\r\n\r\n").encode())
        status, _, body = read_response(sock)
    assert status == 400
    assert_openai_error(body, "invalid_handshake")


def test_a_websocket_client_that_stops_answering_pings_is_closed_and_logged(
    make_edge: Callable[..., EdgeServer], caplog: pytest.LogCaptureFixture
) -> None:
    """`REALTIME_PING_INTERVAL_S` and `REALTIME_PING_TIMEOUT_S` reach uvicorn, and the close says why."""
    caplog.set_level(logging.INFO, logger="edge")
    edge = make_edge(realtime_ping_interval_s=0.5, realtime_ping_timeout_s=0.5)
    key = base64.b64encode(os.urandom(16)).decode()
    with connect(edge) as sock:
        sock.sendall((HANDSHAKE.format(key=key) + "\r\n").encode())
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(65536):  # never answered: no pong goes back
            received += chunk
        elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 101")
    assert b"keepalive ping timeout" in received  # the close frame's reason
    assert elapsed < 20

    def logged(*parts: str) -> bool:
        return any(all(part in record.getMessage() for part in parts) for record in caplog.records)

    deadline = time.monotonic() + 10  # the session notices the close on its own task
    while not logged("realtime session from", "ended by the connection") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logged("no pong within 0.5 s of a ping"), [record.getMessage() for record in caplog.records]
    assert logged("realtime session from", "ended by the connection")
