"""The benchmarks page and its live runs, headless."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from api.middleware import RateLimit, Refusal
from api.ratelimit import TokenBuckets
from benchmarks import live
from benchmarks.load import LoadResult
from ml.engine import Engine
from ml.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


def wait_done(run: live.LiveRun, timeout: float = 60.0) -> live.LiveRun:
    deadline = time.monotonic() + timeout
    while run.active and time.monotonic() < deadline:
        run.heartbeat()
        time.sleep(0.1)
    assert not run.active
    return run


def test_short_run_renders_charts_and_table(registry: Registry) -> None:
    registry.warmup()
    app = AppTest.from_file(str(ROOT / "views" / "benchmarks.py"), default_timeout=90)
    app.run()
    assert not app.exception
    app.slider[0].set_value(1)
    app.button[0].click().run()  # the form's Run button
    run = wait_done(app.session_state["benchmark_run"])
    assert run.state == "done" and run.paths == ("in-process",)  # no API in AppTest
    app.run()
    assert not app.exception
    assert len(app.get("vega_lite_chart")) >= 3  # over time, distribution, throughput
    table = app.dataframe[0].value
    assert list(table["path"]) == ["in-process"] and table["requests"][0] > 0
    assert any("Run done" in s.value for s in app.success)


def test_a_second_run_cannot_start_over_a_first(registry: Registry) -> None:
    registry.warmup()
    first = live.start(registry, model="sentiment", paths=("in-process",), concurrency=2,
                       seconds=2, base_url=None)
    with pytest.raises(live.RunInProgress):
        live.start(registry, model="sentiment", paths=("in-process",), concurrency=1,
                   seconds=1, base_url=None)
    first.stop()
    assert wait_done(first).state == "stopped"
    assert live.active_run() is None


def test_a_run_nobody_watches_stops_by_itself(registry: Registry,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "IDLE_STOP_S", 0.3)
    run = live.start(registry, model="recommender", paths=("in-process",), concurrency=1,
                     seconds=20, base_url=None)
    started = time.monotonic()
    while run.active and time.monotonic() - started < 10:
        time.sleep(0.05)  # no heartbeat: the page went away
    assert run.state == "stopped"
    assert time.monotonic() - started < 5


def test_limits_are_clamped(registry: Registry) -> None:
    run = live.start(registry, model="sentiment", paths=("in-process",), concurrency=999,
                     seconds=999, base_url=None)
    assert run.concurrency == live.MAX_CONCURRENCY and run.seconds == live.MAX_SECONDS
    run.stop()
    wait_done(run)
    with pytest.raises(ValueError):
        live.start(registry, model="gpt", paths=("in-process",), concurrency=1, seconds=1,
                   base_url=None)


def request(token: str | None) -> dict[str, object]:
    headers = [(b"content-type", b"application/json")]
    if token is not None:
        headers.append((live.RUN_HEADER.encode(), token.encode()))
    return {"type": "http", "path": "/api/predict/sentiment", "headers": headers}


def spend(limit: RateLimit, token: str | None, times: int) -> int:
    """How many of `times` requests with `token` got a 429."""
    refused = 0
    for _ in range(times):
        try:
            limit.check(request(token), "127.0.0.1")
        except Refusal as refusal:
            assert refusal.status == 429
            refused += 1
    return refused


def test_only_the_running_runs_secret_skips_the_rate_limit(registry: Registry) -> None:
    """The run's own requests are not counted; a wrong secret, no secret, and the right
    secret once the run has ended are rate-limited as usual."""
    limit = RateLimit(TokenBuckets(rate=0.001, burst=3), exempt=live.measuring)
    run = live.start(registry, model="sentiment", paths=("in-process",), concurrency=1,
                     seconds=30, base_url=None)
    try:
        assert spend(limit, run.token, 50) == 0
        assert spend(limit, run.token[:-1] + "x", 5) == 2  # forged: the burst, then 429s
        assert spend(limit, None, 1) == 1
    finally:
        run.stop()
        wait_done(run)
    assert spend(limit, run.token, 3) == 3  # replayed after the run: worthless


def test_the_run_measures_the_model_not_the_cache(registry: Registry) -> None:
    """The engine serving the HTTP path answers nothing from its cache during a run."""
    registry.warmup()
    engine = Engine(registry)
    query = registry.get("sentiment").examples()[0]
    engine.predict("sentiment", query)
    run = live.start(registry, model="sentiment", paths=("in-process",), concurrency=1,
                     seconds=30, base_url=None, engine=engine)
    try:
        while run.state == "starting":
            time.sleep(0.01)
        assert not engine.predict("sentiment", query).cached
    finally:
        run.stop()
        wait_done(run)
    assert engine.predict("sentiment", query).cached  # back on after the run
    engine.close()


def test_a_run_with_errors_says_so_and_claims_no_ratio(registry: Registry) -> None:
    """The run the issue saw: 149 answers and 3,903 429s on the HTTP path."""
    run = live.LiveRun(model="sentiment", paths=("in-process", "http"), concurrency=1,
                       seconds=3, base_url="http://127.0.0.1:1", state="done")
    run.samples = {"in-process": [(i / 1000, 0.00005) for i in range(3000)],
                   "http": [(i / 50, 0.0004) for i in range(149)]}
    run.results = {"in-process": LoadResult(elapsed=3.0, statuses={200: 3000}),
                   "http": LoadResult(elapsed=3.0, errors=3903,
                                      statuses={200: 149, 429: 3903})}
    assert run.failures() == {"HTTP (this server)": {"HTTP 429": 3903}}
    app = AppTest.from_file(str(ROOT / "views" / "benchmarks.py"), default_timeout=90)
    app.session_state["benchmark_run"] = run
    app.run()
    assert not app.exception
    errors = [e.value for e in app.error]
    assert any("3,903 HTTP 429" in e and "no ratio" in e for e in errors), errors
    assert not any("Run done" in s.value for s in app.success)
    assert not any("slower than in-process" in m.value for m in app.markdown)
    table = app.dataframe[0].value
    assert "vs in-process (p50)" not in table.columns
