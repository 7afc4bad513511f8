"""Fetching audio by URL: what is fetched, what is refused (SSRF), and the limits.

Only loopback traffic is allowed here. Every refusal of a non-loopback address must happen
before connecting, which `connections` proves: it records every TCP connection attempt and fails
the test on one to a non-loopback address.
"""

import asyncio
import base64
import gzip
import ipaddress
import resource
import socket
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import brotli
import httpcore
import httpx
import pytest
import pytest_asyncio

import server.files.fetch
from server.core.errors import InputError
from server.core.settings import Settings
from server.files.fetch import SafeFetcher, is_public_address

DATA = Path(__file__).parent / "data"
AUDIO = (DATA / "silero_test.opus").read_bytes()
MAX_MB = 0.5
MAX_BYTES = int(MAX_MB * 1024 * 1024)
STALL_S = 10.0
BOMB_MIB = 1024  # the decompression bombs expand to 1 GiB of zeros


def gzip_of_zeros(mib: int) -> bytes:
    """A gzip stream of `mib` MiB of zeros, built without compressing them all.

    After a sync flush the deflate output for each further MiB of zeros is the same bytes, so the
    stream is the first MiB's output, the steady one repeated, the final block and the trailer.
    """
    chunk = bytes(1 << 20)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(chunk) + deflate.flush(zlib.Z_SYNC_FLUSH)
    steady = deflate.compress(chunk) + deflate.flush(zlib.Z_SYNC_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)
    return header + first + steady * (mib - 1) + deflate.flush(zlib.Z_FINISH) + trailer


@pytest.fixture(scope="module")
def bombs() -> dict[str, tuple[bytes, str]]:
    """Bodies the test server sends as /bomb/<name>: (body, Content-Encoding), each 1 GiB decoded."""
    compressor = brotli.Compressor(quality=3, lgwin=24)
    chunk = bytes(1 << 20)
    brotli_bomb = b"".join(compressor.process(chunk) for _ in range(BOMB_MIB)) + compressor.finish()
    _Handler.bombs = {
        "br": (brotli_bomb, "br"),
        "gzip-gzip": (gzip.compress(gzip_of_zeros(BOMB_MIB), compresslevel=9), "gzip, gzip"),
    }
    return _Handler.bombs


class _Handler(BaseHTTPRequestHandler):
    """Routes: /audio, /chunked?bytes=N, /huge (announces a large Content-Length), /stall,
    /status/<code>, /redirect?to=<url>, /loop, /host (echoes the Host header), and the
    decompression bombs /bomb/<name> of the `bombs` fixture (sent whatever the Accept-Encoding)."""

    protocol_version = "HTTP/1.1"
    release = threading.Event()
    bombs: ClassVar[dict[str, tuple[bytes, str]]] = {}

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/audio":
            self._send(200, AUDIO, "audio/ogg")
        elif url.path == "/chunked":
            self._send_chunked(int(query["bytes"]))
        elif url.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(100 * MAX_BYTES))
            self.end_headers()
            self.wfile.write(b"\0" * 1024)
        elif url.path == "/stall":
            self.release.wait(STALL_S)
            self._send(200, AUDIO, "audio/ogg")
        elif url.path.startswith("/status/"):
            self._send(int(url.path.rsplit("/", 1)[1]), b"nope", "text/plain")
        elif url.path == "/redirect":
            self._redirect(query["to"])
        elif url.path == "/loop":
            self._redirect("/loop")
        elif url.path == "/host":
            self._send(200, self.headers["Host"].encode(), "text/plain")
        elif url.path.startswith("/bomb/"):
            body, encoding = self.bombs[url.path.removeprefix("/bomb/")]
            self._send(200, body, "audio/wav", encoding=encoding)
        else:
            self._send(404, b"", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str, encoding: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_chunked(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        block = b"\1" * 65536
        sent = 0
        try:
            while sent < size:
                part = block[: size - sent]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                sent += len(part)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client stopped reading at the limit

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 (random port); yields its `http://127.0.0.1:<port>`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _Handler.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def connections(monkeypatch) -> list[str]:
    """Every host a TCP connection is attempted to; a non-loopback one fails the test at once."""
    attempts: list[str] = []
    real_connect = httpcore.AnyIOBackend.connect_tcp

    async def connect(self, host: str, port: int, *args, **kwargs):
        attempts.append(host)
        assert ipaddress.ip_address(host.strip("[]")).is_loopback, f"connection attempted to {host}"
        return await real_connect(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect)
    return attempts


# The fetchers' connection pools belong to the event loop of the test that uses them.


def make_settings(**overrides) -> Settings:
    values = dict(
        allowed_url_hosts="", max_upload_mb=MAX_MB, media_dir=None, fetch_timeout_s=5.0, fetch_max_redirects=3
    )
    return Settings(_env_file=None, **(values | overrides))


@pytest_asyncio.fixture(loop_scope="function")
async def fetcher(connections) -> AsyncIterator[SafeFetcher]:
    """A fetcher that may fetch from 127.0.0.1 (the test server) but not from localhost or [::1]."""
    fetcher = SafeFetcher(make_settings(allowed_url_hosts="127.0.0.1"))
    yield fetcher
    await fetcher.aclose()


@pytest_asyncio.fixture(loop_scope="function")
async def strict_fetcher(connections) -> AsyncIterator[SafeFetcher]:
    """A fetcher with no allowlist."""
    fetcher = SafeFetcher(make_settings())
    yield fetcher
    await fetcher.aclose()


async def refused(fetcher: SafeFetcher, url: str, status: int = 400, code: str | None = None) -> InputError:
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        media = await fetcher.fetch(url)
        media.file.close()
    assert info.value.status == status, info.value.message
    if code is not None:
        assert info.value.code == code, info.value.message
    assert time.monotonic() - started < 3.0
    return info.value


# --- Fetching from an allowed host ---------------------------------------------------------------


async def test_allowlisted_local_server_is_fetched(fetcher: SafeFetcher, origin: str) -> None:
    media = await fetcher.fetch(f"{origin}/audio")
    with media.file:
        assert media.file.read() == AUDIO
    assert media.size == len(AUDIO)


async def test_chunked_body_within_the_limit_is_fetched(fetcher: SafeFetcher, origin: str) -> None:
    media = await fetcher.fetch(f"{origin}/chunked?bytes={MAX_BYTES}")
    with media.file:
        assert media.size == MAX_BYTES
        assert len(media.file.read()) == MAX_BYTES


async def test_allowed_redirect_is_followed(fetcher: SafeFetcher, origin: str) -> None:
    media = await fetcher.fetch(f"{origin}/redirect?to=/audio")
    with media.file:
        assert media.file.read() == AUDIO


async def test_connects_to_the_validated_address_and_keeps_the_host_name(
    monkeypatch, connections: list[str], origin: str
) -> None:
    """The host name is resolved once, by the guard, and the socket goes to the address it checked."""
    resolved: list[str] = []
    checked: list[str] = []

    async def fake_resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    def pretend_loopback_is_public(address) -> bool:
        checked.append(str(address))
        return True

    monkeypatch.setattr(server.files.fetch, "resolve", fake_resolve)
    monkeypatch.setattr(server.files.fetch, "is_public_address", pretend_loopback_is_public)
    fetcher = SafeFetcher(make_settings())
    try:
        port = urlsplit(origin).port
        media = await fetcher.fetch(f"http://media.example.test:{port}/host")
    finally:
        await fetcher.aclose()
    with media.file:
        assert media.file.read() == f"media.example.test:{port}".encode()
    assert resolved == ["media.example.test"]
    assert checked == connections == ["127.0.0.1"]


# --- Refused before connecting -------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1.2.3",
        "localhost",
        "2130706433",  # 127.0.0.1 as one number
        "10.1.2.3",
        "192.168.0.1",
        "172.16.5.4",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "[::1]",
        "[::]",
        "[::ffff:127.0.0.1]",
        "[::ffff:10.0.0.1]",
        "[fd00::1]",
        "[fe80::1]",
        "[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
        "[2002:a00:1::]",  # 6to4 of 10.0.0.1
    ],
)
async def test_non_public_hosts_are_refused(strict_fetcher: SafeFetcher, connections: list[str], host: str) -> None:
    await refused(strict_fetcher, f"http://{host}:9/audio.wav", code="url_not_allowed")
    await refused(strict_fetcher, f"https://{host}/audio.wav", code="url_not_allowed")
    assert connections == []


async def test_loopback_names_not_in_the_allowlist_are_refused(
    fetcher: SafeFetcher, connections: list[str], origin: str
) -> None:
    port = urlsplit(origin).port
    await refused(fetcher, f"http://localhost:{port}/audio", code="url_not_allowed")
    await refused(fetcher, f"http://[::1]:{port}/audio", code="url_not_allowed")
    assert connections == []


@pytest.mark.parametrize("address", ["10.0.0.7", "192.168.1.1", "169.254.169.254", "::1", "fd12::1", "127.0.0.1"])
async def test_names_resolving_to_non_public_addresses_are_refused(
    monkeypatch, strict_fetcher: SafeFetcher, connections: list[str], address: str
) -> None:
    async def fake_resolve(host: str, port: int) -> list[str]:
        return [address]

    monkeypatch.setattr(server.files.fetch, "resolve", fake_resolve)
    await refused(strict_fetcher, "http://rebind.example.test/audio.wav", code="url_not_allowed")
    assert connections == []


async def test_one_non_public_address_among_public_ones_is_refused(
    monkeypatch, strict_fetcher: SafeFetcher, connections: list[str]
) -> None:
    async def fake_resolve(host: str, port: int) -> list[str]:
        return ["93.184.215.14", "10.0.0.1"]

    monkeypatch.setattr(server.files.fetch, "resolve", fake_resolve)
    await refused(strict_fetcher, "http://mixed.example.test/audio.wav", code="url_not_allowed")
    assert connections == []


async def test_unresolvable_host_is_a_client_error(
    monkeypatch, strict_fetcher: SafeFetcher, connections: list[str]
) -> None:
    async def fail_resolve(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(server.files.fetch, "resolve", fail_resolve)
    error = await refused(strict_fetcher, "http://nowhere.example.test/audio.wav", code="fetch_failed")
    assert "resolve" in error.message
    assert connections == []


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1/audio.wav",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/audio",
        "http://localhost:{port}/audio",
        "http://[::ffff:127.0.0.1]:{port}/audio",
        "file:///etc/passwd",
        "ftp://127.0.0.1/audio.wav",
    ],
)
async def test_redirects_are_checked_at_every_hop(
    fetcher: SafeFetcher, connections: list[str], origin: str, target: str
) -> None:
    target = target.format(port=urlsplit(origin).port)
    error = await refused(fetcher, f"{origin}/redirect?to={target}")
    assert error.code in ("url_not_allowed", "unsupported_url")
    assert connections == ["127.0.0.1"]


async def test_too_many_redirects_are_refused(fetcher: SafeFetcher, origin: str) -> None:
    error = await refused(fetcher, f"{origin}/loop", code="fetch_failed")
    assert "redirected more than 3 times" in error.message


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.wav", "gopher://example.com/", "javascript:alert(1)"]
)
async def test_other_schemes_are_refused(strict_fetcher: SafeFetcher, url: str) -> None:
    await refused(strict_fetcher, url, code="unsupported_url")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("100.64.0.1", False),
        ("198.18.0.1", False),
        ("255.255.255.255", False),
        ("240.0.0.1", False),
        ("ff02::1", False),
        ("::ffff:169.254.169.254", False),
        ("2001:db8::1", False),
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


# --- Limits and remote failures ------------------------------------------------------------------


async def test_announced_length_over_the_limit_is_refused_at_once(fetcher: SafeFetcher, origin: str) -> None:
    await refused(fetcher, f"{origin}/huge", status=413, code="too_large")


async def test_chunked_body_over_the_limit_is_refused(fetcher: SafeFetcher, origin: str) -> None:
    await refused(fetcher, f"{origin}/chunked?bytes={20 * MAX_BYTES}", status=413, code="too_large")


async def test_stalling_server_times_out(connections: list[str], origin: str) -> None:
    fetcher = SafeFetcher(make_settings(allowed_url_hosts="127.0.0.1", fetch_timeout_s=0.5))
    try:
        started = time.monotonic()
        error = await refused(fetcher, f"{origin}/stall", code="fetch_timeout")
        assert time.monotonic() - started < 2.0
        assert "0.5 seconds" in error.message
    finally:
        await fetcher.aclose()


@pytest.mark.parametrize("status", [404, 403, 500])
async def test_non_2xx_answers_are_refused(fetcher: SafeFetcher, origin: str, status: int) -> None:
    error = await refused(fetcher, f"{origin}/status/{status}", code="fetch_failed")
    assert str(status) in error.message


async def test_connection_failure_is_a_client_error(fetcher: SafeFetcher, origin: str) -> None:
    await refused(fetcher, "http://127.0.0.1:9/audio.wav", code="fetch_failed")


# --- Hostile servers and malformed hosts ---------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "a" * 64 + ".example",  # a label longer than 63 characters
        "a" * 10_000,
        ("a" * 60 + ".") * 5 + "example",  # labels within limits, more than 253 characters in all
        "xn--",  # an A-label with no Punycode
        "xn--a.example",
        "a..example",
    ],
)
async def test_invalid_host_names_are_refused_before_resolving(
    monkeypatch, strict_fetcher: SafeFetcher, connections: list[str], host: str
) -> None:
    resolved: list[str] = []

    async def recording_resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["93.184.215.14"]

    monkeypatch.setattr(server.files.fetch, "resolve", recording_resolve)
    error = await refused(strict_fetcher, f"http://{host}/audio.wav", code="invalid_value")
    assert "host" in error.message
    assert len(error.message) < 500
    assert resolved == connections == []


async def test_invalid_host_names_are_refused_by_the_real_resolver(strict_fetcher: SafeFetcher) -> None:
    """Without the check, `getaddrinfo`'s IDNA step raised a UnicodeError (a 500)."""
    await refused(strict_fetcher, "http://" + "a" * 64 + ".example/", code="invalid_value")


async def test_valid_long_host_name_is_resolved(monkeypatch, strict_fetcher: SafeFetcher) -> None:
    resolved: list[str] = []

    async def recording_resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["10.0.0.1"]

    monkeypatch.setattr(server.files.fetch, "resolve", recording_resolve)
    host = ("a" * 63 + ".") * 3 + "example"
    await refused(strict_fetcher, f"http://{host}/audio.wav", code="url_not_allowed")
    assert resolved == [host]


@pytest.mark.parametrize(
    "location",
    ["data:audio/wav;base64,UklGRg==", "http://xn--/audio.wav", "http://" + "a" * 64 + ".example/"],
)
async def test_redirects_to_unfetchable_urls_are_refused(
    fetcher: SafeFetcher, connections: list[str], origin: str, location: str
) -> None:
    error = await refused(fetcher, f"{origin}/redirect?to={location}")
    assert error.code in ("unsupported_url", "invalid_value")
    assert connections == ["127.0.0.1"]


@pytest.mark.parametrize("name", ["br", "gzip-gzip"])
async def test_compressed_bodies_are_refused_without_decompressing(
    fetcher: SafeFetcher, origin: str, bombs: dict[str, tuple[bytes, str]], name: str
) -> None:
    """A body sent with a Content-Encoding it was not asked for is refused, and never expanded.

    httpx used to decode it while streaming: 1 GiB in memory (one chunk, ahead of the size
    limit) and seconds of the event loop. The peak RSS must not move by anything like it, and a
    heartbeat on the loop must keep running while the fetch is refused.
    """
    assert len(bombs[name][0]) < 4000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.01)
            beats += 1

    ticker = asyncio.create_task(heartbeat())
    try:
        await asyncio.sleep(0.05)
        beats_before = beats
        error = await refused(fetcher, f"{origin}/bomb/{name}", code="fetch_failed")
        await asyncio.sleep(0.05)
        assert beats > beats_before
    finally:
        ticker.cancel()
    assert "Content-Encoding" in error.message
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert peak_after - peak_before < (BOMB_MIB << 20) // 10


@pytest.mark.parametrize("name", ["br", "gzip-gzip"])
def test_the_edge_answers_a_bomb_url_with_a_400_and_keeps_serving(
    edge, origin: str, bombs: dict[str, tuple[bytes, str]], name: str
) -> None:
    """Through the real edge: a 400 in OpenAI's shape, `/health` answering while it is handled,
    and no growth of the (shared) process's peak memory anywhere near the bomb's size."""
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    url = f"{edge.url}/v1/audio/transcriptions"
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(httpx.post, url, json={"url": f"{origin}/bomb/{name}"}, timeout=60)
        health = []
        while not answer.done():
            health.append(httpx.get(f"{edge.url}/health", timeout=30).status_code)
        response = answer.result()
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "fetch_failed"
    assert all(status == 200 for status in health)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert peak_after - peak_before < (BOMB_MIB << 20) // 10


# --- data: URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["data:audio/ogg;base64,", "data:application/octet-stream;base64,", "data:;base64,"])
async def test_base64_data_urls_are_decoded(strict_fetcher: SafeFetcher, prefix: str) -> None:
    media = await strict_fetcher.fetch(prefix + base64.b64encode(AUDIO).decode())
    with media.file:
        assert media.file.read() == AUDIO
    assert media.size == len(AUDIO)


async def test_percent_encoded_data_url(strict_fetcher: SafeFetcher) -> None:
    media = await strict_fetcher.fetch("data:text/plain,RIFF%00%01")
    assert media.file.read() == b"RIFF\x00\x01"


@pytest.mark.parametrize("url", ["data:audio/wav;base64,!!!not base64!!!", "data:audio/wav;base64", "data:"])
async def test_malformed_data_urls_are_refused(strict_fetcher: SafeFetcher, url: str) -> None:
    await refused(strict_fetcher, url, code="invalid_data_url")


async def test_data_url_over_the_limit_is_refused(strict_fetcher: SafeFetcher) -> None:
    payload = base64.b64encode(b"\0" * (MAX_BYTES + 1024)).decode()
    await refused(strict_fetcher, "data:audio/wav;base64," + payload, status=413, code="too_large")


# --- Paths in the media directory ----------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="function")
async def media_fetcher(tmp_path: Path) -> AsyncIterator[SafeFetcher]:
    """A fetcher whose media_dir holds clip.opus, sub/clip.opus and links to in and out of it."""
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    (media / "clip.opus").write_bytes(AUDIO)
    (media / "sub" / "clip.opus").write_bytes(AUDIO)
    (tmp_path / "secret.wav").write_bytes(b"secret")
    (media / "inside-link.opus").symlink_to(media / "clip.opus")
    (media / "escape-link.wav").symlink_to(tmp_path / "secret.wav")
    (media / "escape-dir").symlink_to(tmp_path)
    fetcher = SafeFetcher(make_settings(media_dir=str(media)))
    yield fetcher
    await fetcher.aclose()


@pytest.mark.parametrize("name", ["clip.opus", "sub/clip.opus", "./sub/../clip.opus", "inside-link.opus"])
async def test_paths_inside_media_dir_are_opened(media_fetcher: SafeFetcher, name: str) -> None:
    media = await media_fetcher.fetch(name)
    with media.file:
        assert media.file.read() == AUDIO
    assert media.size == len(AUDIO)


async def test_absolute_path_inside_media_dir_is_opened(media_fetcher: SafeFetcher, tmp_path: Path) -> None:
    media = await media_fetcher.fetch(str(tmp_path / "media" / "clip.opus"))
    with media.file:
        assert media.file.read() == AUDIO


@pytest.mark.parametrize(
    "name",
    [
        "../secret.wav",
        "sub/../../secret.wav",
        "escape-link.wav",
        "escape-dir/secret.wav",
        "/etc/passwd",
        "missing.wav",
        "sub",
        "clip\0.opus",
    ],
)
async def test_paths_outside_media_dir_are_refused(media_fetcher: SafeFetcher, name: str) -> None:
    await refused(media_fetcher, name, code="path_not_allowed")


async def test_file_urls_are_refused_even_inside_media_dir(media_fetcher: SafeFetcher, tmp_path: Path) -> None:
    await refused(media_fetcher, f"file://{tmp_path / 'media' / 'clip.opus'}", code="unsupported_url")


async def test_media_file_over_the_limit_is_refused(media_fetcher: SafeFetcher, tmp_path: Path) -> None:
    (tmp_path / "media" / "big.wav").write_bytes(b"\0" * (MAX_BYTES + 1))
    await refused(media_fetcher, "big.wav", status=413, code="too_large")


async def test_paths_are_refused_without_media_dir(strict_fetcher: SafeFetcher) -> None:
    await refused(strict_fetcher, str(DATA / "jfk.flac"), code="path_not_allowed")
    await refused(strict_fetcher, "jfk.flac", code="path_not_allowed")
