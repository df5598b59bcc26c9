"""Soak: a minute of mixed traffic at high concurrency on a real one-process server. Every
request gets an answer, none is a 5xx, memory settles, nothing leaks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.reliability import SERVER_ENV, soak
from benchmarks.services import running
from ml.config import Settings

pytestmark = pytest.mark.slow
SECONDS = float(os.environ.get("ML_SOAK_SECONDS", "60"))


def test_soak(settings: Settings, registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry.warmup()
    users = registry.get("recommender").known_users()[:200]
    env = {**SERVER_ENV, "ML_CACHE_DIR": str(settings.cache_dir)}
    with running("one-process", env, tmp_path) as server:
        figures = soak(server, SECONDS, users)
        log = server.log.read_text(errors="replace")
    assert figures["sent"] > 1000
    assert figures["unanswered"] == 0, figures
    assert "5xx" not in figures["by_class"], figures["by_status"]
    assert set(figures["by_class"]) <= {"2xx", "4xx"}
    assert figures["by_status"].get("200", 0) > 0.8 * figures["answered"]
    assert figures["rss_growth"] < 0.10, (figures["before"], figures["after"])
    assert figures["after"]["fds"] <= figures["before"]["fds"] + 5
    assert figures["after"]["threads"] <= figures["before"]["threads"] + 2
    assert figures["health_after"] == "healthy"
    assert "Traceback" not in log
