"""Every hostile request in the catalogue gets its documented status and error code."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from benchmarks import hostile
from benchmarks.services import running
from ml.config import Settings

CASES = hostile.cases()


def test_the_catalogue_is_large_and_varied() -> None:
    assert len(CASES) >= 50
    assert len({c.name for c in CASES}) == len(CASES)
    assert {c.status for c in CASES} >= {200, 400, 404, 405, 413, 415, 422}


def test_every_case_gets_its_documented_answer_in_process(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(rate_limit_per_second=0.0)
    outcomes = hostile.run(hostile.httpx_sender(client), CASES)
    wrong = [(o.case.name, o.case.status, o.case.code, o.status, o.code)
             for o in outcomes if not o.ok]
    assert not wrong, wrong
    health = client.get("/health").json()
    assert health["status"] == "healthy"
    assert client.post("/api/predict/sentiment", json={"text": "still fine"}).status_code == 200


@pytest.mark.slow
def test_a_real_server_survives_the_catalogue_without_growing(settings: Settings, registry,  # type: ignore[no-untyped-def]
                                                              tmp_path: Path) -> None:
    registry.warmup()
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu",
           "ML_RATE_LIMIT_PER_SECOND": "0"}
    with running("api", env, tmp_path) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        import psutil

        process = psutil.Process(server.process.pid)
        send = hostile.httpx_sender(client)
        first = hostile.run(send, CASES)  # warms every code path (decoders, parsers)
        wrong = [(o.case.name, o.status, o.code) for o in first if not o.ok]
        assert not wrong, wrong
        before = process.memory_info().rss
        for _ in range(3):
            again = hostile.run(send, CASES)
            assert all(o.ok for o in again)
        after = process.memory_info().rss
        assert after < before * 1.05 + 20 * 2**20, (before / 2**20, after / 2**20)
        assert client.get("/health").json()["status"] == "healthy"
        assert client.post("/api/predict/sentiment", json={"text": "fine"}).status_code == 200
    assert os.path.exists(server.log)
