"""URL inputs (image_url, any `<field>_url`) fetched so that they cannot be turned against
internal addresses (SSRF)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable

import anyio
import httpx

from api.errors import UrlFetchFailed, UrlNotAllowed
from api.middleware import uint

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (numeric spellings like 0x7f.1 included)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UrlFetchFailed(f"cannot resolve host {host!r}: {exc}", field="url") from None
    return sorted({str(info[4][0]) for info in infos})


def _net(cidr: str) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network(cidr)


def _low32(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


# IPv6 ranges whose addresses carry an IPv4 address that a router or the host's stack may
# turn into an IPv4 connection: each embedded address must be public too.
_EMBEDDING: tuple[tuple[ipaddress.IPv6Network,
                        Callable[[ipaddress.IPv6Address], list[ipaddress.IPv4Address]]], ...] = (
    (_net("::ffff:0:0/96"), lambda ip: [_low32(ip)]),  # IPv4-mapped
    (_net("2002::/16"), lambda ip: [ip.sixtofour] if ip.sixtofour else []),  # 6to4
    (_net("2001::/32"), lambda ip: list(ip.teredo) if ip.teredo else []),  # Teredo
    (_net("64:ff9b::/96"), lambda ip: [_low32(ip)]),  # NAT64, well-known prefix
)
# IPv6 ranges refused outright: translation for local networks only (RFC 8215), and the
# deprecated IPv4-compatible and IPv4-translated forms.
_REFUSED = (_net("64:ff9b:1::/48"), _net("::/96"), _net("::ffff:0:0:0/96"))
_ISATAP = (0x00005EFE, 0x02005EFE)  # interface identifier ...:[02]00:5efe:a.b.c.d


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 transition address carries (none for a plain one)."""
    found = [v4 for network, extract in _EMBEDDING if ip in network for v4 in extract(ip)]
    if (int(ip) >> 32) & 0xFFFFFFFF in _ISATAP:
        found.append(_low32(ip))
    return found


def is_public(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses, and for an IPv6 address that
    embeds IPv4 addresses (6to4, Teredo, NAT64, ISATAP, IPv4-mapped) only if each of them
    is public as well."""
    if isinstance(ip, ipaddress.IPv6Address):
        if any(ip in network for network in _REFUSED):
            return False
        embedded = embedded_ipv4(ip)
        if ip in _EMBEDDING[0][0] or ip in _EMBEDDING[3][0]:  # IPv4-mapped and NAT64:
            return _is_public(embedded[0])  # judged as the IPv4 address they carry
        if not all(_is_public(v4) for v4 in embedded):
            return False
    return _is_public(ip)


def _is_public(ip: IPAddress) -> bool:
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local
                                 or ip.is_loopback or ip.is_private or ip.is_unspecified)


class ImageFetcher:
    """GETs image URLs safely: http(s) only, checked addresses, bounded size, time, hops."""

    def __init__(self, *, max_bytes: int, timeout_s: float, max_redirects: int,
                 allow: Iterable[str] = (), resolver: Resolver | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self.allow = [ipaddress.ip_network(cidr, strict=False) for cidr in allow]
        self.resolver = resolver or system_resolver
        self.client = httpx.AsyncClient(transport=transport, follow_redirects=False,
                                        trust_env=False, timeout=httpx.Timeout(timeout_s))

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self.client.aclose()

    async def fetch(self, url: str, *, field: str = "url") -> bytes:
        """The body at `url`, or UrlNotAllowed / UrlFetchFailed naming the input `field`."""
        try:
            with anyio.fail_after(self.timeout_s):
                return await self._fetch(url, field)
        except TimeoutError:
            raise UrlFetchFailed(f"{field} took longer than {self.timeout_s:g}s",
                                 field=field) from None

    async def _fetch(self, url: str, field: str) -> bytes:
        current = self._parse(url, field)
        for _ in range(self.max_redirects + 1):
            address = await self.check(current, field=field)
            target = current.copy_with(host=address)
            host_header = current.host if current.port is None else f"{current.host}:{current.port}"
            extensions = {"sni_hostname": current.host} if current.scheme == "https" else {}
            request = self.client.build_request("GET", target, headers={
                "host": host_header, "accept": "image/*", "user-agent": "realtime-ml/1"},
                extensions=extensions)
            try:
                response = await self.client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise UrlFetchFailed(f"could not fetch {field}: {type(exc).__name__}",
                                     field=field) from None
            try:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise UrlFetchFailed("redirect without a Location", field=field)
                    current = self._parse(str(current.join(location)), field)
                    continue
                if response.status_code != 200:
                    raise UrlFetchFailed(f"{field} answered HTTP {response.status_code}",
                                         field=field, status=response.status_code)
                return await self._read(response, field)
            finally:
                await response.aclose()
        raise UrlFetchFailed(f"{field} redirected more than {self.max_redirects} times",
                             field=field)

    async def check(self, url: httpx.URL, *, field: str = "url") -> str:
        """The address to connect to, if every address of the host is allowed."""
        host = url.host
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        try:
            addresses = [str(literal)] if literal is not None else await self.resolver(
                host, url.port or (443 if url.scheme == "https" else 80))
        except UrlFetchFailed as exc:
            raise UrlFetchFailed(exc.message, field=field) from None
        if not addresses:
            raise UrlFetchFailed(f"host {host!r} has no address", field=field)
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if not (is_public(ip) or any(ip in network for network in self.allow)):
                raise UrlNotAllowed(f"{field} host {host!r} resolves to a non-public "
                                    f"address ({ip}); refused", field=field)
        return addresses[0]

    def _parse(self, url: str, field: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise UrlNotAllowed(f"{field} is not a valid URL", field=field) from None
        if parsed.scheme not in ("http", "https"):
            raise UrlNotAllowed(f"{field} scheme {parsed.scheme or '(none)'!r} is not "
                                "allowed; use http or https", field=field)
        if not parsed.host:
            raise UrlNotAllowed(f"{field} has no host", field=field)
        if parsed.userinfo:
            raise UrlNotAllowed(f"{field} must not carry credentials", field=field)
        return parsed

    async def _read(self, response: httpx.Response, field: str) -> bytes:
        declared = response.headers.get("content-length")
        size = uint(declared) if declared else None
        if size is not None and size > self.max_bytes:
            raise UrlFetchFailed(f"{field} is larger than {self.max_bytes} bytes",
                                 field=field, limit=self.max_bytes)
        body = bytearray()
        async for chunk in response.aiter_bytes():  # decoded, so gzip cannot smuggle size
            body += chunk
            if len(body) > self.max_bytes:
                raise UrlFetchFailed(f"{field} is larger than {self.max_bytes} bytes",
                                     field=field, limit=self.max_bytes)
        return bytes(body)
