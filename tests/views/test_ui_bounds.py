"""What an anonymous visitor of the UI may do: predictions count against the API's rate
limit, live benchmark runs are the operator's and belong to whoever started them, the
pages can be narrowed and put behind a password."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import ml.registry
from api.config import ApiSettings
from benchmarks import live
from ml.config import Settings
from ml.registry import Entry, Registry
from views.shared import buckets

ROOT = Path(__file__).resolve().parents[2]
VISITOR = "ip:127.0.0.1"  # what AppTest's sessions count as (no address: localhost)


@pytest.fixture(autouse=True)
def loaded(registry: Registry) -> None:
    registry.warmup()


@pytest.fixture
def exhausted() -> Iterator[None]:
    """The visitor's bucket empty, and refilling too slowly to matter during the test."""
    limits = buckets()
    rate, limits.rate = limits.rate, 1e-6
    while limits.take(VISITOR) == 0.0:
        pass
    yield
    limits.rate = rate
    limits._tokens.pop(VISITOR, None)


@pytest.mark.usefixtures("exhausted")
def test_page_predictions_spend_the_api_rate_limit() -> None:
    app = AppTest.from_file(str(ROOT / "views" / "sentiment.py"), default_timeout=90)
    app.run()
    app.text_area(key="sentiment_text").input("what a great day").run()
    [analyse] = [b for b in app.button if b.label == "Analyse"]
    analyse.click().run()  # typing alone predicts nothing since the Analyse button
    assert not app.exception
    warnings = " ".join(w.value for w in app.warning)
    assert "Too many predictions from your address" in warnings
    assert "shared with the REST API" in warnings
    assert not app.metric  # no result was computed


def settings_with(**changes: object) -> ApiSettings:
    return ApiSettings().replace(**changes)


@pytest.mark.parametrize(("changes", "key", "public", "allowed", "why"), [
    pytest.param({}, None, False, True, "", id="loopback-no-keys"),
    pytest.param({}, None, True, False, "public", id="public-no-keys"),
    pytest.param({"ui_benchmarks": "on"}, None, True, True, "", id="public-turned-on"),
    pytest.param({"ui_benchmarks": "off"}, None, False, False, "turned off", id="off"),
    pytest.param({"api_keys": ("k-1",)}, None, False, False, "Enter an API key",
                 id="keys-none-given"),
    pytest.param({"api_keys": ("k-1",)}, "k-2", True, False, "not one of", id="keys-wrong"),
    pytest.param({"api_keys": ("k-1",)}, "k-1", True, True, "", id="keys-right"),
    pytest.param({"api_keys": ("k-1",), "ui_benchmarks": "off"}, "k-1", False, False,
                 "turned off", id="keys-but-off"),
])
def test_who_may_start_live_runs(changes: dict[str, object], key: str | None, public: bool,
                                 allowed: bool, why: str) -> None:
    decision, reason = live.may_run(settings_with(**changes), key, public=public)
    assert decision is allowed
    assert why in reason


def test_the_page_finds_its_api_from_its_own_socket_not_headers() -> None:
    source = (ROOT / "views" / "benchmarks.py").read_text()
    assert "st.context" not in source  # no URL from Host, X-Forwarded-Host or Forwarded
    assert live.local_api_url() is None  # this test process listens on nothing


def wait_done(run: live.LiveRun, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while run.active and time.monotonic() < deadline:
        run.heartbeat()
        time.sleep(0.1)


def test_a_run_belongs_to_the_session_that_started_it() -> None:
    owner = AppTest.from_file(str(ROOT / "views" / "benchmarks.py"), default_timeout=90)
    owner.run()
    owner.slider[0].set_value(20)  # outlasts the visitor's page load; stopped below
    owner.button[0].click().run()
    run = owner.session_state["benchmark_run"]
    # the owner's page stays open meanwhile: in a browser its fragment keeps the run alive
    shown = threading.Event()

    def owner_page_open() -> None:
        while not shown.wait(0.5):
            run.heartbeat()

    threading.Thread(target=owner_page_open, daemon=True).start()
    try:
        visitor = AppTest.from_file(str(ROOT / "views" / "benchmarks.py"), default_timeout=90)
        visitor.run()
        assert "benchmark_run" not in visitor.session_state
        assert "Another visitor's run" in " ".join(i.value for i in visitor.info), run.state
        assert visitor.button[0].disabled  # the form's Run button
        assert not [b for b in visitor.button if b.label == "Stop"]
        owner.run()
        assert [b for b in owner.button if b.label == "Stop"]
    finally:
        shown.set()
        run.stop()
        wait_done(run)


@pytest.fixture
def narrowed(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A password and two pages, as an operator sets them (the app reads the environment
    on every run), over a process-wide registry that serves sentiment only."""
    monkeypatch.setenv("ML_UI_PASSWORD", "open sesame")
    monkeypatch.setenv("ML_UI_PAGES", "sentiment,benchmarks")
    only = Registry(registry.settings, entries={"sentiment": Entry.of(registry.get("sentiment"))})
    monkeypatch.setattr(ml.registry, "_default", only)
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.mark.usefixtures("narrowed")
def test_the_ui_can_be_narrowed_and_put_behind_a_password() -> None:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    app.run()
    assert not app.exception
    assert [t.label for t in app.text_input] == ["Password"]
    assert not app.text_area  # no page ran
    app.text_input[0].input("wrong")
    app.button[0].click().run()
    assert "Wrong password" in " ".join(e.value for e in app.error)
    app.text_input[0].input("open sesame")
    app.button[0].click().run()
    assert not app.exception
    assert app.title[0].value == "Sentiment analysis"  # the first page chosen is the default


def test_streamlit_config_hides_tracebacks_and_matches_the_image_limit() -> None:
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"
    assert config["server"]["maxUploadSize"] * 2**20 == Settings().max_image_bytes
    assert config["server"]["enableXsrfProtection"] is True
    assert config["server"]["enableAgentApi"] is False
