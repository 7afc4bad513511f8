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

from server.errors import APIError, bad_request, too_large
from server.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Bodies stay in memory up to this size, then spill to a temporary file.
_SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass
class FetchedMedia:
    file: BinaryIO  # positioned at 0; the caller closes it
    size: int
    content_type: str | None


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
            except OSError:
                targets = []
            if not targets:
                raise bad_request(f"Could not resolve the URL's host {host!r}.", param="url", code="fetch_failed")
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
        """Fetch `url`; raises `APIError` (400, or 413 when too large) for anything refused or failing."""
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError as exc:
            raise bad_request(f"Malformed URL: {exc}.", param="url") from exc
        if scheme == "data":
            return self._decode_data_url(url)
        if scheme in ("http", "https"):
            return await self._fetch_http(url)
        if scheme == "":
            return self._open_media_path(url)
        raise bad_request(
            f"Unsupported URL scheme {scheme!r}: use http, https or data.", param="url", code="unsupported_url"
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _fetch_http(self, url: str) -> FetchedMedia:
        timeout = self._settings.fetch_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await self._download(url)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise bad_request(
                f"Fetching the URL took longer than {timeout:g} seconds.", param="url", code="fetch_timeout"
            ) from exc
        except httpx.HTTPError as exc:
            raise bad_request(
                f"Could not fetch the URL: {str(exc) or type(exc).__name__}.", param="url", code="fetch_failed"
            ) from exc

    async def _download(self, url: str) -> FetchedMedia:
        try:
            request = self._client.build_request("GET", url)
        except httpx.InvalidURL as exc:
            raise bad_request(f"Malformed URL: {exc}.", param="url") from exc
        redirects = 0
        while True:
            self._check_url(request.url)
            response = await self._client.send(request, stream=True)
            if response.next_request is None:
                break
            await response.aclose()
            redirects += 1
            if redirects > self._settings.fetch_max_redirects:
                raise bad_request(
                    f"The URL redirected more than {self._settings.fetch_max_redirects} times.",
                    param="url",
                    code="fetch_failed",
                )
            request = response.next_request
        try:
            if not response.is_success:
                raise bad_request(
                    f"Fetching the URL failed: the server answered {response.status_code} {response.reason_phrase}.",
                    param="url",
                    code="fetch_failed",
                )
            return await self._read_body(response)
        finally:
            await response.aclose()

    def _check_url(self, url: httpx.URL) -> None:
        """Refuse a URL before connecting: wrong scheme, no host, or a non-public IP literal."""
        if url.scheme not in ("http", "https"):
            raise bad_request(
                f"Unsupported URL scheme {url.scheme!r}: use http, https or data.", param="url", code="unsupported_url"
            )
        if not url.host:
            raise bad_request("The URL has no host.", param="url")
        if url.host in self._allowlist:
            return
        address = _ip_or_none(url.host)
        if address is not None and not is_public_address(address):
            raise _not_public(url.host)

    async def _read_body(self, response: httpx.Response) -> FetchedMedia:
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_bytes:
            raise self._too_large()
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY_BYTES)
        try:
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise self._too_large()
                spool.write(chunk)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return FetchedMedia(cast(BinaryIO, spool), size, response.headers.get("content-type"))

    def _decode_data_url(self, url: str) -> FetchedMedia:
        header, comma, payload = url[len("data:") :].partition(",")
        if not comma:
            raise bad_request("Malformed data: URL: no comma before the data.", param="url", code="invalid_data_url")
        params = [p.strip() for p in header.split(";")]
        is_base64 = len(params) > 1 and params[-1].lower() == "base64"
        media_type = params[0] or None
        if is_base64:
            payload = "".join(payload.split())
            if len(payload) // 4 * 3 > self._max_bytes:
                raise self._too_large()
            try:
                data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise bad_request(
                    "Malformed data: URL: the data is not valid base64.", param="url", code="invalid_data_url"
                ) from exc
        else:
            data = unquote_to_bytes(payload)
        if len(data) > self._max_bytes:
            raise self._too_large()
        return FetchedMedia(io.BytesIO(data), len(data), media_type)

    def _open_media_path(self, raw: str) -> FetchedMedia:
        if self._media_root is None:
            raise bad_request(
                "Server-side paths are not enabled on this server; send an http(s) or data: URL.",
                param="url",
                code="path_not_allowed",
            )
        try:
            path = (self._media_root / raw).resolve()
            inside = path.is_relative_to(self._media_root) and path.is_file()
        except (OSError, ValueError):
            inside = False
        if not inside:
            raise bad_request(
                "The path is not a file inside this server's media directory.", param="url", code="path_not_allowed"
            )
        file = path.open("rb")
        size = path.stat().st_size
        if size > self._max_bytes:
            file.close()
            raise self._too_large()
        return FetchedMedia(file, size, None)

    def _too_large(self) -> APIError:
        return too_large(f"The audio is larger than the maximum of {self._settings.max_upload_mb:g} MB.", param="url")


def _not_public(host: str) -> APIError:
    return bad_request(
        f"The URL's host {host!r} is not a public address; this server only fetches from public hosts "
        "(and those in ALLOWED_URL_HOSTS).",
        param="url",
        code="url_not_allowed",
    )


def _bare_host(host: str) -> str:
    return host.strip().lower().removeprefix("[").removesuffix("]")


def _ip_or_none(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(_bare_host(host))
    except ValueError:
        return None
