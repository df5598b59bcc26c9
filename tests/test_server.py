"""server.py: the UI pages and the REST API share one registry, one copy of each model."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient
from streamlit.testing.v1 import AppTest

from ml.engine import default_engine
from ml.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def test_pages_and_api_share_the_loaded_models(registry: Registry) -> None:
    import server

    assert server.service.registry is registry
    page = AppTest.from_file(str(ROOT / "views" / "sentiment.py"), default_timeout=60)
    page.run()
    page.text_area(key="sentiment_text").input("What a wonderful day").run()
    [analyse] = [b for b in page.button if b.label == "Analyse"]
    analyse.click().run()
    assert not page.exception
    assert page.session_state["sentiment_answer"][1].result.sentiment == "positive"
    assert server.service.engine is default_engine()
    with TestClient(server.api) as client:
        response = client.post("/api/predict/sentiment", json={"text": "What a wonderful day"})
        assert response.json()["sentiment"] == "positive"
        detailed = client.post("/api/predict/sentiment", json={
            "text": "What a wonderful day", "options": {"detailed": True}})
        # the page asked first: the API's answer comes from the cache they share
        assert detailed.headers["server-timing"] == "cache;desc=hit"
        loads = {m["name"]: m["loads"] for m in client.get("/api/models").json()["models"]}
    assert loads["sentiment"] == 1
    assert registry.load_count("sentiment") == 1


def test_server_mounts_the_api_paths_under_st_app() -> None:
    import server
    from api.ui import UiGuard

    paths = {route.path for route in server.api_routes}
    assert {"/api/{path:path}", "/health", "/metrics", "/openapi.json", "/docs"} <= paths
    assert isinstance(server.app, server.ApiFirst)
    assert server.app.api is server.api
    assert isinstance(server.app.ui, UiGuard)  # the UI, behind its bounds
    assert str(server.app.ui.app.script_path) == "app.py"  # type: ignore[attr-defined]
