"""A real browser (Debian's chromium via Playwright) against the one-process server."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect, sync_playwright

from benchmarks.services import Server, running
from ml.config import Settings
from tests.conftest import encoded, need_tool, photo

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def server(one_process_server: Server) -> Server:
    return one_process_server


@pytest.fixture(scope="module")
def browser_page(server: Server) -> Iterator[object]:
    need_tool(Path(CHROMIUM).exists(),
              "Debian's chromium is not installed (make test installs it as root)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(90_000)
        yield page
        browser.close()


def fresh_page(page):  # type: ignore[no-untyped-def]
    """A new tab of the same browser, for listeners set before its first request."""
    tab = page.context.browser.new_page(viewport={"width": 1400, "height": 1000})
    tab.set_default_timeout(90_000)
    return tab


def visit(page, server: Server, path: str, marker: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{server.url}{path}")
    page.get_by_text(marker).first.wait_for()
    settle(page)


def settle(page) -> None:  # type: ignore[no-untyped-def]
    """Wait until Streamlit has finished running the script (no running indicator)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=90_000)
    page.wait_for_timeout(300)


def test_deep_link_first_gets_the_app_navigation(browser_page, server: Server) -> None:  # type: ignore[no-untyped-def]
    """The very first visit of a fresh server lands on a page URL, not on /."""
    page = browser_page
    visit(page, server, "/recommender", "Product recommendations")
    nav = page.locator("[data-testid=stSidebarNav]").inner_text()
    lines = [line.strip() for line in nav.splitlines() if line.strip()]
    titles = ["Overview", "Sentiment", "Image classification", "Recommendations",
              "Wine cultivar"]  # the plugin too
    assert [line for line in lines if line in titles] == titles
    assert not {"app", "shared", "model"} & set(lines)  # no legacy page list


def test_overview(browser_page, server: Server) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    visit(page, server, "/", "Real-time ML predictions")
    page.get_by_text("Held-out accuracy").first.wait_for()
    page.get_by_text("NDCG@10").first.wait_for()
    page.screenshot(path=SHOTS / "overview.png", full_page=True)


PAGES = [("/", "Real-time ML predictions"), ("/sentiment", "Sentiment analysis"),
         ("/image", "Image classification"), ("/recommender", "Product recommendations"),
         ("/wine", "Wine cultivar"), ("/benchmarks", "Benchmarks")]


def test_every_page_loads_from_this_server_alone(browser_page, server: Server) -> None:  # type: ignore[no-untyped-def]
    """Offline works: no request to another host (a :material/: page icon made every page
    fetch its favicon from fonts.gstatic.com). The only failed requests are the frontend's
    base-path probes on a deep link (README, "Deep links"), each followed by the root's."""
    page = fresh_page(browser_page)
    requested: list[str] = []
    failed: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("response", lambda response: response.status >= 400 and failed.append(
        f"{response.status} {urlsplit(response.url).path}"))
    try:
        for path, marker in PAGES:
            visit(page, server, path, marker)
    finally:
        page.close()
    host = urlsplit(server.url).netloc
    assert [url for url in requested if urlsplit(url).scheme in ("http", "https", "ws", "wss")
            and urlsplit(url).netloc != host] == []
    probes = [f"404 {path}/_stcore/{route}" for path, _ in PAGES[1:]
              for route in ("health", "host-config")]
    assert sorted(failed) == sorted(probes)
    assert f"{server.url}/_stcore/health" in requested


def test_overview_links_to_the_pages_and_stops_polling(browser_page, server: Server) -> None:  # type: ignore[no-untyped-def]
    """With every model ready the model cards no longer rerun every 2 s (each rerun is a
    message from the browser), and the page links navigate."""
    page = fresh_page(browser_page)
    sent: list[object] = []
    page.on("websocket", lambda socket: socket.on("framesent", lambda frame: sent.append(frame)))
    try:
        visit(page, server, "/", "Real-time ML predictions")
        page.get_by_text("NDCG@10").first.wait_for()
        settle(page)
        before = len(sent)
        page.wait_for_timeout(5_000)
        assert len(sent) == before, f"{len(sent) - before} reruns in 5 s"
        for route in ("/docs", "/health", "/metrics"):
            assert page.locator(f"a[href='{route}']").count() == 1
        page.locator("[data-testid=stPageLink]").get_by_text("Recommendations").click()
        page.wait_for_url("**/recommender")
        page.get_by_role("heading", name="Product recommendations").wait_for()
    finally:
        page.close()


def test_sentiment_type_and_submit(browser_page, server: Server) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    visit(page, server, "/sentiment", "Sentiment analysis")
    page.get_by_text("Model card").wait_for()  # the script has run to the end
    box = page.locator("textarea").first
    box.click()
    box.fill("What a wonderful, smooth ride. I love it!")
    page.get_by_text("41/5000").first.wait_for()  # the character counter
    page.get_by_role("button", name="Analyse", exact=True).click()
    page.get_by_text("Words that drove the decision").wait_for()
    assert page.get_by_text("positive", exact=True).first.is_visible()
    page.get_by_text("ms in-process").first.wait_for()
    settle(page)
    page.screenshot(path=SHOTS / "sentiment.png", full_page=True)
    page.get_by_text("Model card").scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / "sentiment-words.png")
    box.fill("What a dreadful ride.")  # edited: the old answer goes on the next run
    page.get_by_text("Sentiment analysis").first.click()
    page.get_by_text("The text changed").wait_for()
    # Streamlit keeps the last run's elements, faded, until this run ends: wait for it
    expect(page.get_by_text("Words that drove the decision")).to_have_count(0, timeout=30_000)


def test_sentiment_batch_csv_keeps_its_columns(browser_page, server: Server,  # type: ignore[no-untyped-def]
                                               tmp_path: Path) -> None:
    page = browser_page
    visit(page, server, "/sentiment", "Sentiment analysis")
    page.get_by_role("tab", name="Batch").click()
    page.get_by_text("Upload CSV").click()
    upload = tmp_path / "reviews.csv"
    upload.write_text("id,review,stars\n7,I love this phone,5\n8,Worst service ever,1\n"
                      "9,The shop opens at nine,3\n")
    page.locator("input[type=file]").set_input_files(str(upload))
    page.get_by_role("button", name="Analyse 3 texts").click()
    page.get_by_text("ms in-process").first.wait_for()
    settle(page)
    page.screenshot(path=SHOTS / "sentiment-batch.png", full_page=True)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == "id,review,stars,sentiment,confidence %,score"
    assert lines[1].startswith("7,I love this phone,5,positive,")
    assert lines[2].startswith("8,Worst service ever,1,negative,")


def test_image_upload(browser_page, server: Server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    visit(page, server, "/image", "Image classification")
    page.get_by_text("Upload", exact=True).click()
    upload = tmp_path / "coffee.jpg"
    upload.write_bytes(encoded(photo("coffee"), "JPEG", quality=90))
    page.locator("input[type=file]").set_input_files(str(upload))
    page.get_by_text("espresso").first.wait_for()
    page.get_by_text("ms in-process").first.wait_for()
    settle(page)
    page.screenshot(path=SHOTS / "image.png", full_page=True)


def test_image_gallery_thumbnails_are_clickable(browser_page, server: Server) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    visit(page, server, "/image", "Image classification")
    page.get_by_role("button", name="A cup of coffee").click()
    page.get_by_text("espresso").first.wait_for()
    settle(page)
    page.screenshot(path=SHOTS / "image-gallery.png", full_page=True)


def test_image_upload_of_a_non_image_is_explained(browser_page, server: Server,  # type: ignore[no-untyped-def]
                                                  tmp_path: Path) -> None:
    """...and the previous image's answer goes with it."""
    page = browser_page
    visit(page, server, "/image", "Image classification")
    page.get_by_text("Upload", exact=True).click()
    good = tmp_path / "coffee.jpg"
    good.write_bytes(encoded(photo("coffee"), "JPEG", quality=90))
    page.locator("input[type=file]").set_input_files(str(good))
    page.get_by_text("espresso").first.wait_for()
    fake = tmp_path / "not-really.png"
    fake.write_bytes(b"this is not an image at all")
    page.locator("input[type=file]").set_input_files(str(fake))
    page.get_by_text("not a supported image").first.wait_for()
    expect(page.get_by_text("Best guess")).to_have_count(0, timeout=30_000)
    expect(page.get_by_text("espresso")).to_have_count(0, timeout=30_000)


def test_recommendations_pick_a_household(browser_page, server: Server) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    visit(page, server, "/recommender", "Product recommendations")
    page.get_by_role("heading", name="Discover").wait_for()
    page.get_by_role("combobox").first.click()
    option = page.get_by_role("option").nth(2)
    chosen = option.inner_text()
    option.click()
    page.get_by_role("combobox").first.wait_for()
    assert chosen.split(":")[0] in page.get_by_role("combobox").first.input_value() or \
        page.get_by_text(chosen.split(":")[0]).first.is_visible()
    settle(page)
    page.get_by_role("heading", name="Buy again").wait_for()
    page.get_by_text("ms in-process").first.wait_for()
    # the two tables of the page, not the model card's (in its expander)
    tables = page.locator("[data-testid=stDataFrame]:not([data-testid=stExpander] *)")
    assert tables.count() == 2
    assert tables.nth(1).bounding_box()["height"] > 200  # ten rows, not an empty frame
    # every column fits: no table scrolls sideways at 1400 px
    overflow = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid=stDataFrame] .dvn-scroller')].map(s => s.scrollWidth - s.clientWidth)""")
    assert len(overflow) >= 2 and max(overflow) <= 0, overflow
    page.screenshot(path=SHOTS / "recommender.png", full_page=True)


def test_a_plugin_model_gets_a_try_it_page(browser_page, server: Server) -> None:  # type: ignore[no-untyped-def]
    """The example plugin's page is generated from its query type; nothing here names it."""
    page = browser_page
    visit(page, server, "/wine", "Wine cultivar")
    assert page.locator("[data-testid=stNumberInput]").count() == 13  # one per field
    page.get_by_role("button", name="Predict").click()
    page.get_by_text("ms in-process").first.wait_for()
    page.get_by_text("cultivar 1", exact=True).first.wait_for()  # the first example's class
    settle(page)
    page.screenshot(path=SHOTS / "plugin.png", full_page=True)


@pytest.fixture(scope="module")
def throttled_server(settings: Settings, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[Server]:
    """The one process with the old, tight rate limit (50/s, bursts of 100) that made the
    page's HTTP path measure 429s."""
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu",
           "ML_RATE_LIMIT_PER_SECOND": "50", "ML_RATE_LIMIT_BURST": "100"}
    with running("one-process", env, tmp_path_factory.mktemp("throttled")) as started:
        yield started


def test_benchmarks_page_runs_in_process_and_http(browser_page, server: Server,  # type: ignore[no-untyped-def]
                                                  throttled_server: Server) -> None:
    """The default run, on a server whose rate limit the run would blow through many times
    over, measures predictions only and shows the real order: in-process, then HTTP to this
    process, then the microservice hop."""
    page = browser_page
    visit(page, throttled_server, "/benchmarks", "Benchmarks")
    page.get_by_text("HTTP (this server)").first.wait_for()  # the API is in this process
    page.get_by_text("the prediction cache is off").first.wait_for()
    page.get_by_role("button", name="Run").click()
    page.get_by_text("Run done").wait_for(timeout=120_000)
    settle(page)
    page.get_by_text("slower than in-process").first.wait_for()
    assert not page.locator("[data-testid=stAlertContentError]").count()
    text = page.locator("[data-testid=stMain]").inner_text()
    ratios = dict(re.findall(r"(HTTP \(this server\)|HTTP \+ microservice hop) is "
                             r"([0-9.]+)x slower than in-process", text))
    assert set(ratios) == {"HTTP (this server)", "HTTP + microservice hop"}, text
    assert 1 < float(ratios["HTTP (this server)"]) < float(ratios["HTTP + microservice hop"])
    assert page.get_by_text("This server's own metrics").is_visible()
    page.screenshot(path=SHOTS / "benchmarks.png", full_page=True)
    page.get_by_text("slower than in-process").first.scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / "benchmarks-summary.png")
