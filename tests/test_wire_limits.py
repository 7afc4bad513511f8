"""What a client sends before the app sees a request is bounded and answered in OpenAI's shape
(`server.api.wire_limits`): endless headers, headers that dribble in, a body that dribbles in, a
WebSocket handshake the parser refuses, bytes that are not HTTP, and a WebSocket client that stops
answering pings.

Raw sockets, since no HTTP client library sends such requests.
"""

import base64
import json
import logging
import os
import re
import select
import socket
import time
from collections.abc import Callable, Iterable
from itertools import repeat

import httpx
import pytest

from server.api import wire_limits
from server.api.wire_limits import MAX_HEAD_BYTES
from tests.conftest import DATA, EdgeServer, metric_sum

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


def read_kept_alive_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head and body of one response, the connection left open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def assert_openai_error(body: bytes, code: str) -> None:
    error = json.loads(body)["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]


def wire_timeouts(edge: EdgeServer, what: str) -> float:
    return metric_sum(httpx.get(f"{edge.url}/metrics", timeout=30).text, "edge_wire_timeouts_total", f'what="{what}"')


def trickle(sock: socket.socket, pieces: Iterable[bytes], interval_s: float) -> None:
    """Send `pieces` `interval_s` apart, until they are sent or the edge answers (or closes)."""
    for piece in pieces:
        try:
            sock.sendall(piece)
        except OSError:  # the edge closed the connection, and the client had not read yet
            return
        if select.select([sock], [], [], interval_s)[0]:
            return


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
    counted = wire_timeouts(edge, "head")
    with connect(edge) as sock:
        sock.settimeout(15)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\nX-Slow: ")
        status, _, body = read_response(sock)
    assert status == 408
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and error["type"] == "timeout_error"
    assert wire_timeouts(edge, "head") == counted + 1


def test_a_kept_alive_connections_next_head_is_timed_too(edge: EdgeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire_limits, "HEAD_TIMEOUT_S", 2.0)
    with connect(edge) as sock:
        sock.settimeout(15)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\n\r\n")
        head, _ = read_kept_alive_response(sock)
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


BODY_GRACE_S = 1.5
BODY_MIN_KB_PER_S = 4.0
TRANSCRIBE_HEAD = (
    "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: edge\r\nContent-Type: {type}\r\nContent-Length: {length}\r\n\r\n"
)


@pytest.fixture(scope="module")
def slow_body_edge(make_edge: Callable[..., EdgeServer]) -> EdgeServer:
    """An edge with a short body grace, and bodies above 1 MB refused by their `Content-Length`."""
    return make_edge(body_grace_s=BODY_GRACE_S, body_min_kb_per_s=BODY_MIN_KB_PER_S, max_upload_mb=1.0)


def multipart_upload(path: str, boundary: str = "edge-test-boundary") -> bytes:
    with open(DATA / path, "rb") as f:
        audio = f.read()
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + audio
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--{boundary}--\r\n'
        ).encode()
    )


def test_a_body_that_dribbles_in_gets_a_408_and_its_connection_closed(
    slow_body_edge: EdgeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Unbounded before: a body declared at 10 MB, then sent a byte every 5 s, held its connection
    and its request's task for as long as the client liked (23 days for that body). Here 1 MB, under
    the edge's `MAX_UPLOAD_MB`."""
    caplog.set_level(logging.WARNING, logger="edge")
    edge = slow_body_edge
    counted = wire_timeouts(edge, "body")
    with connect(edge) as sock:
        sock.sendall(TRANSCRIBE_HEAD.format(type="application/json", length=1_000_000).encode())
        started = time.monotonic()
        trickle(sock, repeat(b" ", 60), 0.5)
        status, headers, body = read_response(sock)  # to the end: the connection is closed
        elapsed = time.monotonic() - started
    assert status == 408 and headers["connection"] == "close" and headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout" and error["type"] == "timeout_error"
    assert "of 1000000 bytes" in error["message"]
    assert BODY_GRACE_S - 0.1 < elapsed < BODY_GRACE_S + 5
    assert wire_timeouts(edge, "body") == counted + 1
    assert httpx.get(f"{edge.url}/health", timeout=30).status_code == 200
    # One line says it all; the request's task, told its client has gone, adds none.
    [logged] = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert "refusing POST /v1/audio/transcriptions from 127.0.0.1:" in logged and "of 1000000 bytes in" in logged


def test_a_slow_body_above_the_minimum_rate_is_served(slow_body_edge: EdgeServer) -> None:
    """24 kB over 3.5 s, past the grace: each piece earns the body more time than it takes."""
    upload = multipart_upload("silero_test.opus")
    head = TRANSCRIBE_HEAD.format(type="multipart/form-data; boundary=edge-test-boundary", length=len(upload))
    piece = int(BODY_MIN_KB_PER_S * 1024 * 0.75)  # 0.5 s apart: 1.5 times the minimum rate
    pieces = [upload[i : i + piece] for i in range(0, len(upload), piece)]
    with connect(edge := slow_body_edge) as sock:
        sock.sendall(head.encode())
        started = time.monotonic()
        trickle(sock, pieces, 0.5)
        assert time.monotonic() - started > BODY_GRACE_S + 1
        head_in, body = read_kept_alive_response(sock)
    assert head_in.startswith(b"HTTP/1.1 200"), head_in + body
    assert json.loads(body)["text"] is not None
    assert httpx.get(f"{edge.url}/health", timeout=30).status_code == 200


def test_a_body_still_dribbling_after_the_app_answered_is_cut_without_a_second_answer(
    slow_body_edge: EdgeServer,
) -> None:
    """An early answer (a 413 for the declared length) is left whole: the connection only closes."""
    with connect(slow_body_edge) as sock:
        sock.sendall(TRANSCRIBE_HEAD.format(type="application/json", length=10_000_000).encode())
        head, body = read_kept_alive_response(sock)
        assert head.startswith(b"HTTP/1.1 413")
        assert json.loads(body)["error"]["code"] == "too_large"
        trickle(sock, repeat(b" ", 60), 0.5)  # the client goes on sending its body
        try:
            rest = sock.recv(65536)
        except ConnectionResetError:  # closed with the client's last bytes unread: the kernel resets
            rest = b""
        assert rest == b""  # closed, with nothing after the 413


def test_the_body_clock_stops_when_the_body_is_in(slow_body_edge: EdgeServer) -> None:
    """A kept-alive connection idle after a request with a body is not cut, nor is its next request."""
    body = {"url": "data:audio/wav;base64,bm90IGF1ZGlv"}  # read whole, then refused by the app
    with httpx.Client(base_url=slow_body_edge.url, timeout=30) as client:
        assert client.post("/v1/audio/transcriptions", json=body).status_code == 400
        time.sleep(BODY_GRACE_S + 1)  # within uvicorn's keep-alive timeout (5 s)
        assert client.post("/v1/audio/transcriptions", json=body).status_code == 400
        assert client.get("/health").status_code == 200


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
