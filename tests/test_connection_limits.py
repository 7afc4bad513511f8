"""The floods of issue 25 at a small scale, against a real edge process (`python -m
server.process.launcher`, its vLLM unreachable: nothing here reaches it) with low caps: a body that
trickles, many connections each with a complete head and a body that never comes, many connections
that send nothing. The caps hold (`server.core.connections`, hooked into uvicorn by
`server.api.wire_limits` and into the raw TCP stream): beyond them a new connection gets a 503 in
OpenAI's shape with `Retry-After` (an error line on the TCP stream), `/health` keeps answering, a
new client from another address connects, idle connections make room, every hostile connection is
closed by its deadline, and no file descriptor is left behind.

Hostile clients connect from other loopback addresses (127.0.0.2, …: all of 127/8 is loopback on
Linux), so that the per-client cap sets them apart from the test's own requests. Raw sockets, since
no HTTP client library sends such requests.
"""

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from server.core.connections import FRESH_GRACE_S
from tests.conftest import ROOT, free_port, metric_sum

MAX_CONNECTIONS = 40
PER_CLIENT = 12
BODY_GRACE_S = 3.0
DEADLINE_S = 60.0  # how long the test waits for anything the edge should do at once or within BODY_GRACE_S


@dataclass
class Edge:
    process: subprocess.Popen[bytes]
    port: int
    tcp_port: int
    health_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        """The edge's metrics, from its health port (which no cap applies to)."""
        return httpx.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=30).text

    def metric(self, name: str, label: str = "") -> float:
        """A metric summed over the label sets that contain `label`, or one without labels."""
        text = self.metrics()
        plain = [line for line in text.splitlines() if line.startswith(name + " ")]
        return float(plain[0].split()[1]) if plain else metric_sum(text, name, label)

    def open_connections(self) -> float:
        return self.metric("edge_connections_open")

    def fds(self) -> int:
        return psutil.Process(self.process.pid).num_fds()


def start_edge(tmp_path: Path, **settings: object) -> Iterator[Edge]:
    port, tcp_port, health_port = free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        HOST="127.0.0.1",
        PORT=str(port),
        TCP_PORT=str(tcp_port),
        HEALTH_PORT=str(health_port),
        VLLM_URL=f"http://127.0.0.1:{free_port()}",  # nobody there
        SERVED_MODEL_NAME="voxtral-tiny",
        MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        MAX_CONNECTIONS_PER_CLIENT=str(PER_CLIENT),
        BODY_GRACE_S=str(BODY_GRACE_S),
        BODY_MIN_KB_PER_S="16",
        API_KEYS="",
        LOG_LEVEL="info",
    )
    env.update({key.upper(): str(value) for key, value in settings.items()})
    log = tmp_path / f"edge-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.process.launcher"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    edge = Edge(process, port, tcp_port, health_port, log)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert process.poll() is None, f"the edge exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the edge did not start:\n{log.read_text()}"
            try:
                if httpx.get(f"{edge.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield edge
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    yield from start_edge(tmp_path_factory.mktemp("edge"))


@pytest.fixture(scope="module")
def proxied_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """An edge behind a (pretended) load balancer that names the client in `X-Forwarded-For`."""
    yield from start_edge(tmp_path_factory.mktemp("proxied"), client_address_header="X-Forwarded-For")


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S, source_address=(source, 0))
    sock.settimeout(DEADLINE_S)
    return sock


def unfinished_body(path: str = "/v1/audio/transcriptions", extra: str = "") -> bytes:
    """A complete head promising 1 MB of body, and its first byte."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n{extra}"
        "Content-Length: 1000000\r\n\r\n{"
    ).encode()


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def parse(response: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def assert_turned_away(response: bytes, cap_message: str) -> None:
    status, headers, body = parse(response)
    assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close"
    error = body["error"]
    assert error["code"] == "too_many_connections" and error["type"] == "service_unavailable"
    assert cap_message in error["message"]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def assert_healthy(edge: Edge) -> None:
    """`/health` answers on a new connection from the test's own address."""
    assert httpx.get(f"{edge.url}/health", timeout=DEADLINE_S).json() == {"status": "ok"}


def test_a_flood_of_unfinished_bodies_is_capped_per_client_and_each_is_closed_by_its_deadline(edge: Edge) -> None:
    baseline_fds = edge.fds()
    refused_before = edge.metric("edge_connections_refused_total", 'cap="client"')
    flood = 3 * PER_CLIENT
    with ExitStack() as stack:
        held, turned_away = [], []
        for _ in range(flood):
            sock = stack.enter_context(closing(connect(edge.port, "127.0.0.2")))
            sock.sendall(unfinished_body())
            (held if len(held) < PER_CLIENT else turned_away).append(sock)
        for sock in turned_away:  # beyond the cap: a 503 at once, the connection closed
            assert_turned_away(read_until_closed(sock), f"from this client (at most {PER_CLIENT})")
        # The edge stays at everyone else's service meanwhile.
        assert_healthy(edge)
        other = stack.enter_context(closing(connect(edge.port, "127.0.0.3")))
        other.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")
        assert read_until_closed(other).startswith(b"HTTP/1.1 200")
        # A raw TCP stream from the flooding address is turned away too, with an error line.
        stream = stack.enter_context(closing(connect(edge.tcp_port, "127.0.0.2")))
        line = json.loads(read_until_closed(stream).decode().splitlines()[0])
        assert line["type"] == "error" and line["code"] == "too_many_connections"
        # Every held body is cut at its deadline: a 408, the connection closed.
        for sock in held:
            status, _, body = parse(read_until_closed(sock))
            assert status == 408 and body["error"]["code"] == "request_timeout"
    refused = edge.metric("edge_connections_refused_total", 'cap="client"') - refused_before
    assert refused == flood - PER_CLIENT + 1  # the turned-away bodies and the stream
    wait_for(lambda: edge.fds() <= baseline_fds + 2, f"the edge holds {edge.fds()} fds, {baseline_fds} before")
    wait_for(lambda: edge.open_connections() == 0, "connections stay counted after they closed")
    assert "refusing a connection from 127.0.0.2: Too many open connections from this client" in edge.log.read_text()


def test_a_trickling_body_is_cut_at_its_deadline_while_the_edge_serves_others(edge: Edge) -> None:
    with closing(connect(edge.port, "127.0.0.4")) as sock:
        sock.sendall(unfinished_body())
        for _ in range(int(DEADLINE_S / 0.5)):  # a byte every half second, far below the minimum rate
            try:
                sock.sendall(b" ")
            except OSError:  # the edge closed the connection, and the test had not read yet
                break
            if select.select([sock], [], [], 0.5)[0]:
                break
            assert_healthy(edge)
        status, _, body = parse(read_until_closed(sock))
        assert status == 408 and "arrived too slowly" in body["error"]["message"]


def test_at_the_process_cap_idle_connections_make_room_and_busy_ones_turn_new_ones_away(edge: Edge) -> None:
    idle_closed_before = edge.metric("edge_idle_connections_closed_total")

    def idle_closed() -> float:
        return edge.metric("edge_idle_connections_closed_total") - idle_closed_before

    sources = [f"127.0.0.{n}" for n in range(10, 20)]
    with ExitStack() as stack:
        # Connections that send nothing, up to the cap.
        first = [
            stack.enter_context(closing(connect(edge.port, sources[i % len(sources)]))) for i in range(MAX_CONNECTIONS)
        ]
        wait_for(lambda: edge.open_connections() == MAX_CONNECTIONS, "the idle connections are not all counted")
        time.sleep(FRESH_GRACE_S + 0.5)  # past the grace a new connection gets before it counts as idle
        # A client of the test's takes the place of the oldest one, and is kept alive after its answer.
        kept = stack.enter_context(closing(connect(edge.port)))
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\n\r\n")
        head = b""
        while not head.endswith(b'{"status":"ok"}'):
            head += kept.recv(65536)
        assert head.startswith(b"HTTP/1.1 200") and idle_closed() == 1
        # As many again: each takes the place of an idle one, the kept-alive one first.
        second = [
            stack.enter_context(closing(connect(edge.port, sources[i % len(sources)]))) for i in range(MAX_CONNECTIONS)
        ]
        wait_for(lambda: idle_closed() == MAX_CONNECTIONS + 1, "the idle connections were not closed for new ones")
        assert edge.open_connections() == MAX_CONNECTIONS
        for sock in (*first, kept):
            assert read_until_closed(sock) == b""
        for sock in second:
            sock.close()
        wait_for(lambda: edge.open_connections() == 0, "idle connections stay counted after they closed")

        # Busy connections (bodies on their way, from several addresses) up to the cap: a new
        # connection has no idle one to take the place of and is turned away, a WebSocket too.
        busy = []
        for i in range(MAX_CONNECTIONS):
            sock = stack.enter_context(closing(connect(edge.port, f"127.0.1.{i % 4 + 1}")))
            sock.sendall(unfinished_body())
            busy.append(sock)
        wait_for(lambda: edge.open_connections() == MAX_CONNECTIONS, "the busy connections are not all counted")
        late = stack.enter_context(closing(connect(edge.port, "127.0.2.1")))
        assert_turned_away(read_until_closed(late), f"Too many open connections (at most {MAX_CONNECTIONS})")
        handshake = stack.enter_context(closing(connect(edge.port, "127.0.2.2")))
        handshake.sendall(
            b"GET /v1/realtime?intent=transcription HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        assert_turned_away(read_until_closed(handshake), f"at most {MAX_CONNECTIONS}")
        for sock in busy:  # each cut by its body deadline, after which there is room again
            assert read_until_closed(sock).startswith(b"HTTP/1.1 408")
        assert_healthy(edge)
    assert edge.process.poll() is None


def test_behind_a_proxy_the_client_is_the_one_its_header_names(proxied_edge: Edge) -> None:
    edge = proxied_edge
    with ExitStack() as stack:
        # All from the proxy's one address: more than the per-client cap in all, but for two clients.
        first = [stack.enter_context(closing(connect(edge.port))) for _ in range(PER_CLIENT)]
        for sock in first:
            sock.sendall(unfinished_body(extra="X-Forwarded-For: 198.51.100.7, 203.0.113.1\r\n"))
        beyond = stack.enter_context(closing(connect(edge.port)))
        beyond.sendall(unfinished_body(extra="X-Forwarded-For: 203.0.113.1\r\n"))
        assert_turned_away(read_until_closed(beyond), f"from this client (at most {PER_CLIENT})")
        other = stack.enter_context(closing(connect(edge.port)))
        other.sendall(
            b"GET /health HTTP/1.1\r\nHost: edge\r\nX-Forwarded-For: 203.0.113.2\r\nConnection: close\r\n\r\n"
        )
        assert read_until_closed(other).startswith(b"HTTP/1.1 200")
        assert "refusing a connection from 203.0.113.1" in edge.log.read_text()
        for sock in first:
            assert read_until_closed(sock).startswith(b"HTTP/1.1 408")
