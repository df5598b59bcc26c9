"""Slow-header and slow-body clients get 408 and lose their connection; everybody else is
served meanwhile. Raw sockets against a real server with one-second limits."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from benchmarks.services import Server, running
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


def test_keep_alive_clients_are_not_cut_off(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(3):
            assert client.post("/api/predict/sentiment", json={"text": "hi"}).status_code == 200
            time.sleep(0.3)  # idle between requests, below uvicorn's keep-alive timeout
    assert Path(server.log).exists()
