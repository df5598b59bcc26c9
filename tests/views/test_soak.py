"""A long-running UI keeps its memory: many page visits and a few benchmark runs in a real
browser against a one-process server of its own, RSS measured before and after."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from benchmarks.services import Server, running
from ml.config import Settings
from tests.conftest import need_tool
from tests.views.test_browser import ARGS, CHROMIUM, settle

pytestmark = pytest.mark.slow

PAGES = [("/", "Real-time ML predictions"), ("/sentiment", "Sentiment analysis"),
         ("/image", "Image classification"), ("/recommender", "Product recommendations"),
         ("/wine", "Wine cultivar"), ("/benchmarks", "Benchmarks")]
ROUNDS = 6  # visits of every page after the first (each page: a few seconds)
BENCHMARK_RUNS = 3
GROWTH = 1.10  # RSS after the soak over RSS after the first visit of each page


@pytest.fixture(scope="module")
def soak_server(settings: Settings, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Server]:
    """`make run`'s server, on its own: nothing but this test touches its memory."""
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu"}
    with running("one-process", env, tmp_path_factory.mktemp("soak")) as server:
        yield server


def rss_mb(server: Server) -> float:
    """Resident memory now, after the server has had a moment to go idle."""
    time.sleep(2.0)
    return float(psutil.Process(server.process.pid).memory_info().rss) / 2**20


def use(page, server: Server, path: str, marker: str, round_: int) -> None:  # type: ignore[no-untyped-def]
    """Visit a page and do what a visitor does there."""
    page.goto(f"{server.url}{path}")
    page.get_by_text(marker).first.wait_for()
    settle(page)
    if path == "/sentiment":
        box = page.locator("textarea").first
        box.fill(f"Visit {round_}: the staff were friendly and the food was great.")
        page.get_by_role("button", name="Analyse", exact=True).click()
        page.get_by_text("Words that drove the decision").wait_for()
    elif path == "/image":
        page.get_by_role("button").filter(has_text="Coffee").first.click()
    settle(page)


def test_a_long_browsing_session_keeps_its_memory(soak_server: Server) -> None:
    need_tool(Path(CHROMIUM).exists(),
              "Debian's chromium is not installed (make test installs it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        for path, marker in PAGES:  # warm-up: the first visit of each page
            use(page, soak_server, path, marker, 0)
        baseline = rss_mb(soak_server)
        runs = 0
        for round_ in range(1, ROUNDS + 1):
            for path, marker in PAGES:
                use(page, soak_server, path, marker, round_)
                if path == "/benchmarks" and runs < BENCHMARK_RUNS and round_ % 2:
                    page.get_by_role("button", name="Run").click()
                    page.get_by_text("Run done").wait_for(timeout=120_000)
                    settle(page)
                    runs += 1
            page.context.clear_cookies()
        browser.close()
    after = rss_mb(soak_server)
    print(f"RSS after the first visits {baseline:.1f} MiB, after {ROUNDS} rounds and "
          f"{runs} benchmark runs {after:.1f} MiB ({after / baseline:.3f}x)")
    assert runs == BENCHMARK_RUNS
    assert after <= GROWTH * baseline, (baseline, after)
