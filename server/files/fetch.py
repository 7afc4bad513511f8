"""Fetch the audio a request names by URL without letting clients reach internal services (SSRF).

Accepted sources:

* `http://` and `https://` URLs on public addresses, or on hosts listed in `ALLOWED_URL_HOSTS`;
* `data:` URLs (`data:[<media type>][;base64],<data>`);
* plain paths, only when `MEDIA_DIR` is set and the path (relative to it, or absolute) resolves,
  symlinks included, to a file inside it. `file://` URLs are refused like any other scheme, so a
  local file has exactly one spelling and one check.

How addresses are checked. The address that must be public is the one the socket connects to,
so the check lives where connections are made: the httpx transport runs on an httpcore network
backend (`_GuardedBackend`) whose `connect_tcp` resolves the host itself, refuses the connection
if any resolved address is not public, and connects to a validated IP address. There is no second
resolution for DNS rebinding to exploit, and every connection (each redirect hop, each new
connection in the pool) passes through it. httpcore still starts TLS with the URL's host name, so
SNI and certificate verification are unchanged. Before connecting, the URL is checked too (scheme,
host, IP literals) so that an obviously bad URL fails fast with a clear message. Redirects are
followed by hand so each hop's URL is checked and counted. Proxies from the environment are
ignored: through a proxy the connection would go to the proxy, not to the checked address.

Hosts in `ALLOWED_URL_HOSTS` (names or IP literals, compared with the URL's host as written)
skip the address check: allowing `127.0.0.1` does not allow `localhost`, nor the reverse.

Host names are checked as DNS names (IDNA-encoded, labels of 1 to 63 characters, 253 in all)
before anything is resolved. Redirect targets that are not fetchable URLs (a `data:` URL, a
malformed host) are refused like any other bad URL.

Bodies are never decompressed. The request asks for `Accept-Encoding: identity`, and a response
with a `Content-Encoding` anyway is refused before its body is read: a few hundred bytes of
brotli or stacked gzip can expand to gigabytes, and the size limit is on the bytes received.

Every refusal is an `InputError` without a request field; the caller names the field.
"""

import asyncio
import base64
import binascii
import io
import ipaddress
import socket
import tempfile
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import unquote_to_bytes, urlsplit

import httpcore
import httpx

from server.core.errors import InputError
from server.core.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Bodies stay in memory up to this size, then spill to a temporary file.
_SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_MAX_HOST_CHARS = 253
_MAX_LABEL_CHARS = 63


@dataclass
class FetchedMedia:
    file: BinaryIO  # positioned at 0; the caller closes it
    size: int


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (tests replace this to simulate DNS answers)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public_address(address: IPAddress) -> bool:
    """Whether `address` is a globally routable unicast address.

    IPv6 addresses that embed an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged by it.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


class _Allowlist:
    """Hosts, as written in URLs, that skip the address check."""

    def __init__(self, hosts: set[str]) -> None:
        self._hosts = {_bare_host(h) for h in hosts}

    def __contains__(self, host: str) -> bool:
        return _bare_host(host) in self._hosts


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to public addresses or allowlisted hosts."""

    def __init__(self, allowlist: _Allowlist) -> None:
        self._allowlist = allowlist
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if host in self._allowlist:
            targets = [host]
        else:
            try:
                targets = await resolve(host, port)
            except (OSError, UnicodeError):
                targets = []
            if not targets:
                raise InputError(f"Could not resolve the URL's host {host!r}.", code="fetch_failed")
            if not all(is_public_address(ipaddress.ip_address(t)) for t in targets):
                raise _not_public(host)
        error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for target in targets:
            try:
                return await self._inner.connect_tcp(
                    target, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, *args: typing.Any, **kwargs: typing.Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not used for fetching URLs.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _guarded_transport(allowlist: _Allowlist) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections go through `_GuardedBackend`.

    httpx has no public parameter for httpcore's network backend, so the transport's connection
    pool is replaced by one built with it (and httpx's default TLS context). The tests that make
    a host name resolve to a private address fail if this ever stops taking effect.
    """
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError("This httpx version keeps its connection pool elsewhere; update _guarded_transport.")
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False), network_backend=_GuardedBackend(allowlist)
    )
    return transport


class SafeFetcher:
    """Fetches http(s) URLs, `data:` URLs and media-dir paths into seekable files, within limits."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._max_bytes = int(settings.max_upload_mb * 1024 * 1024)
        self._media_root = Path(settings.media_dir).resolve() if settings.media_dir else None
        self._allowlist = _Allowlist(settings.allowed_host_set)
        self._client = httpx.AsyncClient(
            transport=_guarded_transport(self._allowlist),
            trust_env=False,
            follow_redirects=False,
            timeout=settings.fetch_timeout_s,
            headers={"Accept-Encoding": "identity"},
        )

    async def fetch(self, url: str) -> FetchedMedia:
        """Fetch `url`; raises `InputError` (400, or 413 when too large) for anything refused or failing."""
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError as exc:
            raise _malformed(str(exc)) from exc
        if scheme == "data":
            return self._decode_data_url(url)
        if scheme in ("http", "https"):
            return await self._fetch_http(url)
        if scheme == "":
            return self._open_media_path(url)
        raise _unsupported_scheme(scheme)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _fetch_http(self, url: str) -> FetchedMedia:
        timeout = self._settings.fetch_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await self._download(url)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise InputError(f"Fetching the URL took longer than {timeout:g} seconds.", code="fetch_timeout") from exc
        except httpx.HTTPError as exc:
            raise InputError(
                f"Could not fetch the URL: {str(exc) or type(exc).__name__}.", code="fetch_failed"
            ) from exc

    async def _download(self, url: str) -> FetchedMedia:
        try:
            request = self._client.build_request("GET", url)
        except httpx.InvalidURL as exc:
            raise _malformed(str(exc)) from exc
        except UnicodeError as exc:  # an IDNA error (a malformed `xn--` label), raised while httpx reads the host
            raise _malformed(f"the host is not a valid host name ({exc})") from exc
        redirects = 0
        while True:
            self._check_url(request.url)
            try:
                response = await self._client.send(request, stream=True)
            except (httpx.InvalidURL, UnicodeError) as exc:
                # httpx builds the redirect request while sending; a Location it cannot turn into an
                # http(s) request (a `data:` URL, a malformed host) fails there.
                raise InputError(
                    f"The URL redirected to a URL that cannot be fetched ({exc}).", code="unsupported_url"
                ) from exc
            if response.next_request is None:
                break
            await response.aclose()
            redirects += 1
            if redirects > self._settings.fetch_max_redirects:
                raise InputError(
                    f"The URL redirected more than {self._settings.fetch_max_redirects} times.", code="fetch_failed"
                )
            request = response.next_request
        try:
            if not response.is_success:
                raise InputError(
                    f"Fetching the URL failed: the server answered {response.status_code} {response.reason_phrase}.",
                    code="fetch_failed",
                )
            return await self._read_body(response)
        finally:
            await response.aclose()

    def _check_url(self, url: httpx.URL) -> None:
        """Refuse a URL before connecting: wrong scheme, no host or not a DNS name, or a non-public IP literal."""
        if url.scheme not in ("http", "https"):
            raise _unsupported_scheme(url.scheme)
        if not url.host:
            raise _malformed("the URL has no host")
        _check_host_name(url)
        if url.host in self._allowlist:
            return
        address = _ip_or_none(url.host)
        if address is not None and not is_public_address(address):
            raise _not_public(url.host)

    async def _read_body(self, response: httpx.Response) -> FetchedMedia:
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise InputError(
                f"The server sent the audio compressed (Content-Encoding: {encoding}) although it was asked for "
                "the plain bytes (Accept-Encoding: identity); compressed downloads are not accepted.",
                code="fetch_failed",
            )
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_bytes:
            raise self._too_large()
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY_BYTES)
        try:
            size = 0
            # The raw bytes: httpx would otherwise decode a Content-Encoding while streaming.
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > self._max_bytes:
                    raise self._too_large()
                spool.write(chunk)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return FetchedMedia(cast(BinaryIO, spool), size)

    def _decode_data_url(self, url: str) -> FetchedMedia:
        header, comma, payload = url[len("data:") :].partition(",")
        if not comma:
            raise InputError("Malformed data: URL: no comma before the data.", code="invalid_data_url")
        params = [p.strip() for p in header.split(";")]
        is_base64 = len(params) > 1 and params[-1].lower() == "base64"
        if is_base64:
            payload = "".join(payload.split())
            if len(payload) // 4 * 3 > self._max_bytes:
                raise self._too_large()
            try:
                data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise InputError("Malformed data: URL: the data is not valid base64.", code="invalid_data_url") from exc
        else:
            data = unquote_to_bytes(payload)
        if len(data) > self._max_bytes:
            raise self._too_large()
        return FetchedMedia(io.BytesIO(data), len(data))

    def _open_media_path(self, raw: str) -> FetchedMedia:
        if self._media_root is None:
            raise InputError(
                "Server-side paths are not enabled on this server; send an http(s) or data: URL.",
                code="path_not_allowed",
            )
        try:
            path = (self._media_root / raw).resolve()
            inside = path.is_relative_to(self._media_root) and path.is_file()
        except (OSError, ValueError):
            inside = False
        if not inside:
            raise InputError("The path is not a file inside this server's media directory.", code="path_not_allowed")
        file = path.open("rb")
        size = path.stat().st_size
        if size > self._max_bytes:
            file.close()
            raise self._too_large()
        return FetchedMedia(file, size)

    def _too_large(self) -> InputError:
        return InputError(
            f"The audio is larger than the maximum of {self._settings.max_upload_mb:g} MB.",
            code="too_large",
            status=413,
        )


def _check_host_name(url: httpx.URL) -> None:
    """Refuse a host that is not a valid DNS name (or IP literal) before it is resolved.

    httpx has already IDNA-encoded a non-ASCII host into `raw_host`; what is left to check is what
    `getaddrinfo`'s own IDNA step would fail on (label and name lengths) and malformed `xn--` labels.
    """
    host = url.raw_host.decode("ascii", errors="replace")
    if _ip_or_none(host) is not None:
        return
    name = host.removesuffix(".")
    if len(name) > _MAX_HOST_CHARS or any(not 0 < len(label) <= _MAX_LABEL_CHARS for label in name.split(".")):
        raise _malformed(
            f"the host is not a valid host name (it needs labels of 1 to {_MAX_LABEL_CHARS} characters "
            f"and at most {_MAX_HOST_CHARS} characters in all)"
        )
    try:
        url.host  # noqa: B018 - decoding the IDNA labels validates them (a malformed `xn--` label fails)
    except UnicodeError as exc:
        raise _malformed(f"the host is not a valid host name ({exc})") from exc


def _malformed(reason: str) -> InputError:
    return InputError(f"Malformed URL: {reason}.", code="invalid_value")


def _unsupported_scheme(scheme: str) -> InputError:
    return InputError(f"Unsupported URL scheme {scheme!r}: use http, https or data.", code="unsupported_url")


def _not_public(host: str) -> InputError:
    return InputError(
        f"The URL's host {host!r} is not a public address; this server only fetches from public hosts "
        "(and those in ALLOWED_URL_HOSTS).",
        code="url_not_allowed",
    )


def _bare_host(host: str) -> str:
    return host.strip().lower().removeprefix("[").removesuffix("]")


def _ip_or_none(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(_bare_host(host))
    except ValueError:
        return None
