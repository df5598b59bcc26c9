"""The benchmarks page and its live runs, headless."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from benchmarks import live
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
