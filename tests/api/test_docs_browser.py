"""`/docs` in a real browser: every operation listed, an example in every request body,
"Try it out" answers from this server, and nothing fetched from any other host."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from benchmarks.services import Server
from tests.conftest import need_tool
from tests.views.test_browser import ARGS, CHROMIUM, SHOTS

pytestmark = pytest.mark.slow


def test_docs_list_every_operation_and_try_it_out_works(one_process_server: Server) -> None:
    from pathlib import Path

    import httpx

    need_tool(Path(CHROMIUM).exists(),
              "Debian's chromium is not installed (make test installs it as root)")
    from playwright.sync_api import sync_playwright

    spec = httpx.get(f"{one_process_server.url}/openapi.json", timeout=10).json()
    operations = sum(len(ops) for ops in spec["paths"].values())
    own = urlsplit(one_process_server.url).netloc
    elsewhere: list[str] = []
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", lambda r: elsewhere.append(r.url)
                if urlsplit(r.url).netloc not in (own, "") else None)
        page.goto(f"{one_process_server.url}/docs", wait_until="networkidle")
        page.wait_for_selector(".opblock", timeout=30_000)
        assert page.locator(".opblock").count() == operations
        page.screenshot(path=str(SHOTS / "docs.png"), full_page=False)
        sentiment = page.locator(".opblock", has_text="/api/predict/sentiment").first
        sentiment.locator(".opblock-summary").click()
        body = sentiment.locator("textarea.body-param__text")
        body.wait_for(timeout=10_000)
        assert '"text"' in body.input_value()  # the model's own example, ready to send
        sentiment.locator("button.execute").click()
        answer = sentiment.locator(".live-responses-table tbody .response-col_status").first
        answer.wait_for(timeout=20_000)
        assert answer.inner_text().strip().startswith("200")
        assert '"sentiment"' in sentiment.locator(".live-responses-table").inner_text()
        sentiment.screenshot(path=str(SHOTS / "docs-try-it-out.png"))
        browser.close()
    assert elsewhere == []
