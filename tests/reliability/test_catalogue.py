"""Every hostile request in the catalogue gets its documented status and error code."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from benchmarks import hostile
from benchmarks.services import running
from ml.config import Settings
from tests.reliability.memory import assert_no_leak, catalogue_growth

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
        before, after, requests = catalogue_growth(client, server.process.pid)
        assert_no_leak(before, after, requests)
        assert client.get("/health").json()["status"] == "healthy"
        assert client.post("/api/predict/sentiment", json={"text": "fine"}).status_code == 200
    assert os.path.exists(server.log)
