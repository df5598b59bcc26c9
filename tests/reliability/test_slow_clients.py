"""Slow-header and slow-body clients get 408 and lose their connection; everybody else is
served meanwhile. Raw sockets against a real server with one-second limits."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn

import api.protocol
from api.protocol import GuardedHttpToolsProtocol
from benchmarks.services import Server, free_port, running
from ml.config import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(settings: Settings, registry, tmp_path_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    registry.warmup()
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu", "ML_MODELS": "sentiment",
           "ML_HEADER_TIMEOUT_S": "1", "ML_BODY_TIMEOUT_S": "1",
           "ML_RATE_LIMIT_PER_SECOND": "0"}
    with running("api", env, tmp_path_factory.mktemp("logs")) as started:
        yield started


def connect(server: Server) -> socket.socket:
    parts = urlsplit(server.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def healthy_while(server: Server, seconds: float) -> list[float]:
    """Latencies of ordinary requests sent while a slow client hangs on."""
    latencies = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=server.url, timeout=5) as client:
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = client.post("/api/predict/sentiment", json={"text": "fine"})
            assert response.status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
    return latencies


def test_slowloris_headers_get_408_and_are_closed(server: Server) -> None:
    sock = connect(server)
    started = time.monotonic()
    sock.sendall(b"POST /api/predict/sentiment HTTP/1.1\r\nHost: x\r\n")
    latencies = healthy_while(server, 0.5)
    for byte in b"X-Slow: 1":  # one byte at a time, never finishing the head
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.2)
    answer = read_all(sock)
    elapsed = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"request_timeout"' in answer
    assert 0.9 < elapsed < 5
    assert max(latencies) < 1.0  # the slow client held nobody up


def test_silent_connection_is_closed(server: Server) -> None:
    sock = connect(server)
    started = time.monotonic()
    answer = read_all(sock)  # never sends a byte
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 5


def test_slow_body_gets_408(server: Server) -> None:
    sock = connect(server)
    sock.sendall(b"POST /api/predict/sentiment HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"text\": ")
    latencies = healthy_while(server, 0.5)
    started = time.monotonic()
    answer = read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b'"request_timeout"' in answer
    assert time.monotonic() - started < 5
    assert max(latencies) < 1.0
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/health").json()["status"] == "healthy"


KEEP_ALIVE_IDLE_S = 1.5  # past the 1 s header timeout, inside uvicorn's 5 s keep-alive


def exchange(sock: socket.socket, path: str) -> bytes:
    """Send one keep-alive GET on `sock` and read exactly its response ("" if closed)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def assert_keep_alive_outlives_the_header_timeout(url: str, path: str) -> None:
    """One socket, requests KEEP_ALIVE_IDLE_S apart: every one answered on that socket."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        for turn in range(3):
            head = exchange(sock, path)
            assert head.startswith(b"HTTP/1.1 200"), f"request {turn + 1}: {head[:80]!r}"
            time.sleep(KEEP_ALIVE_IDLE_S)


def test_keep_alive_clients_are_not_cut_off(server: Server) -> None:
    assert_keep_alive_outlives_the_header_timeout(server.url, "/health/live")


class CutsKeepAlive(GuardedHttpToolsProtocol):
    """Mutant: drops every connection about a second after it opens."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.loop.call_later(1.0, transport.close)


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest ASGI app: 200 and two bytes."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(("protocol", "cut"), [
    pytest.param(GuardedHttpToolsProtocol, False, id="guarded"),
    pytest.param(CutsKeepAlive, True, id="mutant-cuts-after-1s")])
def test_the_keep_alive_check_catches_a_protocol_that_cuts_connections(
        protocol: type[GuardedHttpToolsProtocol], cut: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above passes for the guarded protocol with a 1 s header timeout and fails
    for one that cuts keep-alive connections."""
    monkeypatch.setattr(api.protocol, "_LIMITS",
                        replace(api.protocol.limits(), header_timeout_s=1.0))
    config = uvicorn.Config(hello, host="127.0.0.1", port=free_port(), http=protocol,
                            lifespan="off", log_level="warning")
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not served.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        url = f"http://127.0.0.1:{config.port}"
        if cut:
            with pytest.raises(AssertionError, match="request 2"):
                assert_keep_alive_outlives_the_header_timeout(url, "/")
        else:
            assert_keep_alive_outlives_the_header_timeout(url, "/")
    finally:
        served.should_exit = True
        thread.join(10)
