"""The benchmark harness in quick mode: every path produces results and files (no timing
assertions: these machines are shared and noisy)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from benchmarks.load import http_load, inprocess_load, wrk_load
from benchmarks.services import running
from ml.config import Settings
from tests.conftest import need_tool

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_writes_results_for_every_path(settings: Settings, registry,  # type: ignore[no-untyped-def]
                                                 tmp_path: Path) -> None:
    registry.warmup()
    env = {**os.environ, "ML_CACHE_DIR": str(settings.cache_dir), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--quick", "--out", str(tmp_path),
         "--markdown", str(tmp_path / "BENCHMARKS.md")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "harness-quick.json").read_text())
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"]
    paths = record["results"]["paths"]
    assert set(paths) == {"in-process", "http", "http-unbatched", "hop", "fastapi-peer",
                          "ray-serve"}
    assert set(paths["fastapi-peer"]) == {"sentiment"}
    assert set(paths["http-unbatched"]) == {"sentiment", "image"}
    for path, models in paths.items():
        if path not in ("fastapi-peer", "http-unbatched"):
            assert set(models) == {"sentiment", "image", "recommender"}
        for model, levels in models.items():
            for level, figures in levels.items():
                assert figures["n"] > 0, (path, model, level)
                assert figures["errors"] == 0, (path, model, level)
    scenario = record["results"]["scenario_1000_texts"]
    assert set(scenario) == {"in-process", "http", "hop", "ray-serve"}
    memory = record["results"]["memory"]
    assert set(memory["peak_rss_mb"]) == {"one-process", "one-process-unbatched", "hop-front",
                                          "hop-sentiment", "hop-image", "hop-recommender",
                                          "fastapi-peer", "ray-serve"}
    assert memory["single_over_split"] > 0
    workers = record["results"]["workers"]
    assert workers["1"]["n"] > 0 and workers["2"]["n"] > 0 and workers["two_over_one"] > 0
    assert workers["1"]["errors"] == workers["2"]["errors"] == 0
    floor = record["results"]["pinned"]["configs"]
    assert set(floor) == {"floor", "one-process"}
    assert floor["one-process"]["rps_over_floor"] > 0 and floor["one-process"]["errors"] == 0
    assert floor["one-process"]["cpu_us_per_request"] > floor["floor"]["cpu_us_per_request"]
    targets = record["results"]["targets"]
    # every target has a figure but the API-only one, which quick mode does not measure
    assert len(targets) == 11
    assert [t["target"] for t in targets if t["value"] is None] == [
        "sentiment c=32 requests/s, API-only / one process"]
    with (tmp_path / "harness-quick.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    # per path (in-process, HTTP, hop, Ray Serve), sentiment and recommender at c=1/8/32 and
    # image at c=1/16; the peer serves sentiment only, the batching-off server sentiment and
    # image
    assert len(rows) == 4 * (3 + 2 + 3) + 3 + (3 + 2), [(r.get("path"), r.get("model"))
                                                         for r in rows]
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    for heading in ("Targets", "Latency at concurrency 1", "Throughput under concurrency",
                    "Ratios", "1,000 texts", "Memory", "worker processes", "against the floor"):
        assert heading in markdown


def test_inprocess_load_is_bounded_and_counts_errors() -> None:
    def flaky(x: int) -> int:
        if x % 5 == 0:
            raise ValueError("bad item")
        return x

    result = inprocess_load(flaky, list(range(1, 11)), concurrency=3, requests=50)
    assert result.count == 50
    assert result.errors == 10
    assert len(result.latencies) == 40


@pytest.mark.slow
def test_http_load_against_a_real_server(settings: Settings, registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry.warmup()
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_RATE_LIMIT_PER_SECOND": "0"}
    with running("api", env, tmp_path) as server:
        good = http_load(server.url, "/api/predict/sentiment", [b'{"text": "great"}'],
                         concurrency=4, requests=40)
        bad = http_load(server.url, "/api/predict/sentiment", [b'{"text": ""}'],
                        concurrency=2, requests=10)
    assert good.count == 40 and good.errors == 0 and good.statuses == {200: 40}
    assert good.throughput > 0 and good.client_cpu > 0
    assert bad.errors == 10 and bad.statuses == {422: 10}


@pytest.mark.slow
def test_wrk_load_against_a_real_server(settings: Settings, registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """wrk with the generated Lua script: every body is sent, answers are counted, refusals
    are errors; quotes and brackets in bodies survive the Lua quoting."""
    need_tool(shutil.which("wrk") is not None,
              "wrk is not installed (make test installs it where it can)")
    registry.warmup()
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_RATE_LIMIT_PER_SECOND": "0",
           "ML_MODELS": "sentiment"}
    bodies = [b'{"text": "great ]] \\"quoted\\" ]=] film"}', b'{"text": "awful"}']
    with running("api", env, tmp_path) as server:
        good = wrk_load(server.url, "/api/predict/sentiment", bodies, concurrency=4,
                        seconds=1)
        bad = wrk_load(server.url, "/api/predict/sentiment", [b'{"text": ""}'],
                       concurrency=2, seconds=1)
        ready = httpx.get(f"{server.url}/health/ready", timeout=10).status_code
    assert good["n"] > 10 and good["errors"] == 0 and good["throughput_rps"] > 0
    assert 0 < good["min_ms"] <= good["p50_ms"] <= good["p99_ms"]
    assert bad["n"] > 0 and bad["errors"] == bad["n"] and bad["throughput_rps"] == 0
    assert ready == 200
