"""SSRF guard for image_url: every internal address refused, safe fetches bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from api.errors import UrlFetchFailed, UrlNotAllowed
from api.fetch import ImageFetcher, is_public
from tests.api.servers import http_server
from tests.conftest import encoded, photo

PNG = encoded(photo("coffee").resize((60, 40)))


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    routes = {
        "/coffee.png": (200, {"content-type": "image/png"}, PNG, 0.0),
        "/big.png": (200, {"content-type": "image/png"}, b"x" * 50_000, 0.0),
        "/slow.png": (200, {"content-type": "image/png"}, PNG, 3.0),
        "/missing.png": (404, {}, b"no", 0.0),
    }
    with http_server(routes) as base:
        routes["/to-coffee"] = (302, {"location": f"{base}/coffee.png"}, b"", 0.0)
        routes["/to-metadata"] = (302, {"location": "http://169.254.169.254/latest/"}, b"", 0.0)
        routes["/to-file"] = (302, {"location": "file:///etc/passwd"}, b"", 0.0)
        routes["/loop"] = (302, {"location": f"{base}/loop"}, b"", 0.0)
        yield base


def fetcher(**kwargs: object) -> ImageFetcher:
    options: dict[str, object] = {"max_bytes": 20_000, "timeout_s": 1.0, "max_redirects": 3}
    options.update(kwargs)
    return ImageFetcher(**options)  # type: ignore[arg-type]


def fetch(url: str, **kwargs: object) -> bytes:
    async def go() -> bytes:
        f = fetcher(**kwargs)
        try:
            return await f.fetch(url)
        finally:
            await f.aclose()
    return asyncio.run(go())


REFUSED = [
    pytest.param("http://127.0.0.1/x.png", id="loopback"),
    pytest.param("http://localhost/x.png", id="localhost-name"),
    pytest.param("http://10.1.2.3/x.png", id="10/8"),
    pytest.param("http://172.16.0.1/x.png", id="172.16/12"),
    pytest.param("http://172.31.255.254/x.png", id="172.31"),
    pytest.param("http://192.168.1.1/x.png", id="192.168/16"),
    pytest.param("http://169.254.169.254/latest/meta-data/", id="cloud-metadata"),
    pytest.param("http://[::1]/x.png", id="ipv6-loopback"),
    pytest.param("http://[::ffff:127.0.0.1]/x.png", id="ipv4-mapped-ipv6"),
    pytest.param("http://[::ffff:10.0.0.1]/x.png", id="ipv4-mapped-private"),
    pytest.param("http://[fe80::1]/x.png", id="ipv6-link-local"),
    pytest.param("http://[fc00::1]/x.png", id="ipv6-unique-local"),
    pytest.param("http://0.0.0.0/x.png", id="unspecified"),
    pytest.param("http://2130706433/x.png", id="decimal-127"),
    pytest.param("http://0177.0.0.1/x.png", id="octal-127"),
    pytest.param("http://0x7f.0.0.1/x.png", id="hex-127"),
    pytest.param("http://0x7f000001/x.png", id="hex-whole"),
    pytest.param("http://127.1/x.png", id="short-127"),
    pytest.param("http://224.0.0.1/x.png", id="multicast"),
    pytest.param("http://240.0.0.1/x.png", id="reserved"),
    pytest.param("http://100.64.0.1/x.png", id="carrier-grade-nat"),
]


@pytest.mark.parametrize("url", REFUSED)
def test_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(UrlNotAllowed):
        fetch(url)


@pytest.mark.parametrize("url", [
    pytest.param("file:///etc/passwd", id="file"),
    pytest.param("gopher://example.com/", id="gopher"),
    pytest.param("ftp://example.com/x.png", id="ftp"),
    pytest.param("dict://127.0.0.1:11211/", id="dict"),
    pytest.param("javascript:alert(1)", id="javascript"),
    pytest.param("//example.com/x.png", id="no-scheme"),
    pytest.param("http:///x.png", id="no-host"),
    pytest.param("http://user:pass@example.com/x.png", id="credentials"),
])
def test_other_schemes_and_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UrlNotAllowed):
        fetch(url)


def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return {"images.example.com": ["93.184.216.34", "10.0.0.8"]}[host]

    with pytest.raises(UrlNotAllowed, match=r"10\.0\.0\.8"):
        fetch("http://images.example.com/cat.png", resolver=resolver)


def test_connects_to_the_checked_address_not_a_second_lookup(server: str) -> None:
    """DNS rebinding: the first answer is checked and used; no second lookup happens."""
    calls: list[str] = []
    port = int(server.rsplit(":", 1)[1])

    async def resolver(host: str, port_: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["10.9.9.9"]

    body = fetch(f"http://rebind.test:{port}/coffee.png", resolver=resolver,
                 allow=("127.0.0.0/8",))
    assert body == PNG
    assert calls == ["rebind.test"]


def test_allow_list_admits_a_private_network(server: str) -> None:
    assert fetch(f"{server}/coffee.png", allow=("127.0.0.0/8",)) == PNG
    with pytest.raises(UrlNotAllowed):
        fetch(f"{server}/coffee.png", allow=("10.0.0.0/8",))


def test_redirects_are_followed_and_each_hop_is_checked(server: str) -> None:
    assert fetch(f"{server}/to-coffee", allow=("127.0.0.0/8",)) == PNG
    with pytest.raises(UrlNotAllowed):
        fetch(f"{server}/to-metadata", allow=("127.0.0.0/8",))
    with pytest.raises(UrlNotAllowed):
        fetch(f"{server}/to-file", allow=("127.0.0.0/8",))
    with pytest.raises(UrlFetchFailed, match="redirected more than"):
        fetch(f"{server}/loop", allow=("127.0.0.0/8",))


def test_public_looking_url_redirecting_to_private_is_refused(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])

    async def resolver(host: str, port_: int) -> list[str]:
        # "cdn.example" looks public; its server redirects to the metadata address
        return ["127.0.0.1"]

    with pytest.raises(UrlNotAllowed, match=r"169\.254\.169\.254"):
        fetch(f"http://cdn.example:{port}/to-metadata", resolver=resolver,
              allow=("127.0.0.0/8",))


def test_oversized_and_slow_and_failing_responses(server: str) -> None:
    with pytest.raises(UrlFetchFailed, match="larger than"):
        fetch(f"{server}/big.png", allow=("127.0.0.0/8",))
    with pytest.raises(UrlFetchFailed, match="longer than"):
        fetch(f"{server}/slow.png", allow=("127.0.0.0/8",), timeout_s=0.5)
    with pytest.raises(UrlFetchFailed, match="HTTP 404"):
        fetch(f"{server}/missing.png", allow=("127.0.0.0/8",))


def test_unreachable_host_is_a_fetch_failure() -> None:
    with pytest.raises(UrlFetchFailed):
        fetch("http://127.0.0.1:9/x.png", allow=("127.0.0.0/8",))


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("93.184.216.34", True), ("2606:4700::1111", True),
    ("127.0.0.1", False), ("10.0.0.1", False), ("::1", False), ("::ffff:192.168.0.1", False),
    ("169.254.1.1", False), ("100.64.1.1", False),
])
def test_is_public(address: str, public: bool) -> None:
    import ipaddress

    assert is_public(ipaddress.ip_address(address)) is public


# IPv6 forms that carry an IPv4 address: judged by the address they carry, never connected
@pytest.mark.parametrize(("address", "public"), [
    pytest.param("2002:7f00:1::1", False, id="6to4-loopback"),
    pytest.param("2002:a9fe:a9fe::1", False, id="6to4-cloud-metadata"),
    pytest.param("2002:c0a8:1::1", False, id="6to4-private"),
    pytest.param("2002:808:808::1", True, id="6to4-public"),
    pytest.param("2001:0:4136:e378:8000:63bf:80ff:fffe", False, id="teredo-loopback-client"),
    pytest.param("2001:0:4136:e378:8000:63bf:f7f7:f7f7", False, id="teredo-any"),
    pytest.param("64:ff9b::7f00:1", False, id="nat64-loopback"),
    pytest.param("64:ff9b::a9fe:a9fe", False, id="nat64-cloud-metadata"),
    pytest.param("64:ff9b::808:808", True, id="nat64-public"),
    pytest.param("64:ff9b:1::808:808", False, id="nat64-local-use"),
    pytest.param("::7f00:1", False, id="ipv4-compatible"),
    pytest.param("::808:808", False, id="ipv4-compatible-public"),
    pytest.param("::ffff:0:7f00:1", False, id="ipv4-translated"),
    pytest.param("::ffff:127.0.0.1", False, id="ipv4-mapped-loopback"),
    pytest.param("::ffff:8.8.8.8", True, id="ipv4-mapped-public"),
    pytest.param("2606:4700::5efe:7f00:1", False, id="isatap-loopback"),
    pytest.param("2606:4700::200:5efe:a00:1", False, id="isatap-private"),
    pytest.param("2606:4700::200:5efe:808:808", True, id="isatap-public"),
])
def test_ipv6_transition_addresses_are_judged_by_their_ipv4(address: str,
                                                             public: bool) -> None:
    import ipaddress

    assert is_public(ipaddress.ip_address(address)) is public


def test_image_url_end_to_end_through_the_api(make_client, server: str) -> None:  # type: ignore[no-untyped-def]
    open_client = make_client(url_fetch_allow=("127.0.0.0/8",))
    response = open_client.post("/api/predict/image",
                                json={"image_url": f"{server}/coffee.png", "top_k": 1})
    assert response.status_code == 200, response.text
    guarded = make_client()
    refused = guarded.post("/api/predict/image", json={"image_url": f"{server}/coffee.png"})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "url_not_allowed"
