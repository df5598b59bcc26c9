"""The memory judgement of the catalogue and soak tests fails a server that leaks on purpose
and passes the same server without the leak."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from benchmarks.reliability import SERVER_ENV, soak
from benchmarks.services import ROOT, SERVING_FLAGS, Server, free_port
from ml.config import Settings
from tests.reliability.memory import assert_no_leak, assert_soak_did_not_leak, catalogue_growth

pytestmark = pytest.mark.slow
SOAK_SECONDS = 4.0  # bounded: the leak must show in a few seconds of traffic


@contextmanager
def leaky_server(leak_bytes: int, settings: Settings, log_dir: Path) -> Iterator[Server]:
    """`server:app` (what the soak serves) leaking `leak_bytes` a request, in a uvicorn
    process on 127.0.0.1 with the serving flags of `make run`; stopped by its PID."""
    port = free_port()
    log = log_dir / f"leaky-{leak_bytes}-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), **SERVER_ENV,
           "ML_CACHE_DIR": str(settings.cache_dir), "LEAK_BYTES_PER_REQUEST": str(leak_bytes)}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.reliability.leaky_app:app", "--host",
             "127.0.0.1", "--port", str(port), *SERVING_FLAGS],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{server.url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.25)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("leak_bytes", [
    pytest.param(0, id="as-served"),
    # half the leak the issue named: 207 requests keep ~20 MiB, which the old tolerance
    # (RSS before * 1.05 + 20 MiB, ~40 MiB) let through
    pytest.param(100 * 1024, id="100KiB-a-request"),
])
def test_the_catalogue_judgement_fails_a_leak(settings: Settings, registry,  # type: ignore[no-untyped-def]
                                              tmp_path: Path, leak_bytes: int) -> None:
    registry.warmup()
    with leaky_server(leak_bytes, settings, tmp_path) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        before, after, requests = catalogue_growth(client, server.process.pid)
    if leak_bytes:
        with pytest.raises(AssertionError, match="RSS grew"):
            assert_no_leak(before, after, requests)
    else:
        assert_no_leak(before, after, requests)


@pytest.mark.parametrize("leak_bytes", [
    pytest.param(0, id="as-served"),
    # 4 s at the 1566-3950 req/s measured keep ~50-125 MiB; over the budget down to
    # ~390 req/s, a fifth of the slowest soak measured
    pytest.param(8 * 1024, id="8KiB-a-request"),
])
def test_the_soak_judgement_fails_a_leak(settings: Settings, registry,  # type: ignore[no-untyped-def]
                                         tmp_path: Path, leak_bytes: int) -> None:
    registry.warmup()
    users = registry.get("recommender").known_users()[:200]
    with leaky_server(leak_bytes, settings, tmp_path) as server:
        figures = soak(server, SOAK_SECONDS, users)
    assert figures["unanswered"] == 0, figures
    if leak_bytes:
        with pytest.raises(AssertionError, match="RSS grew"):
            assert_soak_did_not_leak(figures)
    else:
        assert_soak_did_not_leak(figures)
