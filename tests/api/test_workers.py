"""`make api WORKERS=2` (`python -m api.workers`) on 127.0.0.1: connections spread over both
workers, a dead worker is replaced while the other keeps serving, SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import psutil
import pytest

from benchmarks.load import request_bytes
from benchmarks.services import Server, running
from ml.config import Settings

pytestmark = pytest.mark.slow
BODY = b'{"text": "a wonderful, moving film"}'


@pytest.fixture
def two_workers(settings: Settings, registry, tmp_path) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    registry.warmup()  # the workers then load cached artifacts
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_MODELS": "sentiment",
           "ML_RATE_LIMIT_PER_SECOND": "100000", "ML_RATE_LIMIT_BURST": "100000"}
    with running("api-workers-2", env, tmp_path) as server:
        yield server


def port_of(server: Server) -> int:
    return int(urlsplit(server.url).port or 0)


def listening_workers(server: Server) -> dict[int, psutil.Process]:
    """The parent's children that have a socket listening on the server's port."""
    port = port_of(server)
    found = {}
    for child in psutil.Process(server.process.pid).children():
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                   for c in child.net_connections("tcp")):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    return found


def ask(port: int, connections: list[socket.socket] | None = None) -> None:
    """One sentiment request on a new keep-alive connection (kept in `connections`)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(request_bytes(f"http://127.0.0.1:{port}", "/api/predict/sentiment", BODY))
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
    except BaseException:
        sock.close()
        raise
    if connections is None:
        sock.close()
    else:
        connections.append(sock)


def test_connections_spread_over_both_workers(two_workers: Server) -> None:
    workers = listening_workers(two_workers)
    assert len(workers) == 2
    port = port_of(two_workers)
    held: list[socket.socket] = []
    try:
        for _ in range(24):  # all on one worker by chance: 2 in 2**24
            ask(port, held)
        per_worker = {pid: sum(1 for c in w.net_connections("tcp")
                               if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)
                      for pid, w in workers.items()}
    finally:
        for sock in held:
            sock.close()
    assert sum(per_worker.values()) == 24
    assert all(count > 0 for count in per_worker.values()), per_worker
    # the parent holds the port but never listens: it is given no connections
    parent = psutil.Process(two_workers.process.pid)
    assert not [c for c in parent.net_connections("tcp") if c.status == psutil.CONN_LISTEN]


def test_a_dead_worker_is_replaced_and_the_other_keeps_serving(two_workers: Server) -> None:
    before = listening_workers(two_workers)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    # connections already queued on the victim's socket die with it (a kernel without
    # tcp_migrate_req resets them); every connection made after it is gone must be served
    psutil.wait_procs([before[victim]], timeout=10)
    port = port_of(two_workers)
    deadline = time.monotonic() + 60
    served = 0
    while time.monotonic() < deadline:
        ask(port)  # every new connection meanwhile is answered by the survivor
        served += 1
        now = listening_workers(two_workers)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.1)
    assert len(now) == 2 and victim not in now, now
    for _ in range(10):
        ask(port)
    assert served > 0


def test_sigterm_stops_every_worker(two_workers: Server) -> None:
    children = psutil.Process(two_workers.process.pid).children(recursive=True)
    assert two_workers.stop() == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_app_that_cannot_start_stops_the_server(tmp_path, workers: str) -> None:  # type: ignore[no-untyped-def]
    """A broken setting fails every worker's startup the same way: the server exits with an
    error instead of restarting workers forever."""
    import subprocess
    import sys

    from benchmarks.services import ROOT, free_port

    env = {**os.environ, "ML_CACHE_DIR": str(tmp_path), "ML_DEVICE": "tpu",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "api.workers", "--port", str(free_port()),
                           "--workers", workers], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert "ML_DEVICE" in done.stderr


def test_workers_do_not_outlive_a_killed_supervisor(two_workers: Server) -> None:
    workers = list(listening_workers(two_workers).values())
    two_workers.process.kill()  # SIGKILL: no chance to stop them itself
    two_workers.process.wait(10)
    _gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive
