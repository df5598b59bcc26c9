"""Soak: a minute of mixed traffic at high concurrency on a real one-process server. Every
request gets an answer, none is a 5xx, memory settles, nothing leaks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.load import MAX_SECONDS
from benchmarks.reliability import SERVER_ENV, soak
from benchmarks.services import running
from ml.config import Settings
from tests.reliability.memory import assert_soak_did_not_leak

pytestmark = pytest.mark.slow
SECONDS = float(os.environ.get("ML_SOAK_SECONDS", "60"))
# Soaks answered 1858 req/s (RELIABILITY.md), 2840-3130 req/s on a 2-core machine with other
# work running and 1978 req/s there beside a second soak; a floor of a quarter of the slowest
# fails a server, or a load client, that stalled for most of the run.
MIN_REQUESTS_PER_S = 450
# What each route of benchmarks.reliability.mixed_traffic is answered: every connection
# cycles through all its bodies (the invalid ones included) within seconds at those rates.
EXPECTED_STATUSES = {
    "/api/predict/sentiment": {200, 400, 422},  # empty text, text not a string, broken JSON
    "/api/predict/recommend": {200, 422},  # limit 0
    "/api/predict/image": {200},
    "/api/predict/batch": {200},
    "/api/predict/nothing": {404},
}


def test_soak(settings: Settings, registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry.warmup()
    users = registry.get("recommender").known_users()[:200]
    env = {**SERVER_ENV, "ML_CACHE_DIR": str(settings.cache_dir)}
    with running("one-process", env, tmp_path) as server:
        figures = soak(server, SECONDS, users)
        log = server.log.read_text(errors="replace")
    assert figures["sent"] > MIN_REQUESTS_PER_S * min(SECONDS, MAX_SECONDS), figures["routes"]
    assert figures["unanswered"] == 0, figures
    assert figures["client_errors"] == 0, figures["routes"]
    assert "5xx" not in figures["by_class"], figures["by_status"]
    # a route whose load client died at its first connection is missing here
    statuses = {route: {int(s) for s in r["statuses"]} for route, r in figures["routes"].items()}
    assert statuses == EXPECTED_STATUSES, figures["routes"]
    assert figures["by_status"].get("200", 0) > 0.8 * figures["answered"]
    assert_soak_did_not_leak(figures)
    assert figures["after"]["fds"] <= figures["before"]["fds"] + 5
    assert figures["after"]["threads"] <= figures["before"]["threads"] + 2
    assert figures["health_after"] == "healthy"
    assert "Traceback" not in log
