"""A model brought from outside gets everything a built-in model gets, with no edit here.

The plugin is examples/custom_model: a separately installed distribution (requirements-dev
installs it) that declares `wine = "realtime_ml_wine.model:build"` in the entry-point group
`realtime_ml.models`. Nothing in this repository names it. Shown through the real server
(`uvicorn server:app`, as `make run` serves it), a client generated from that server's
/openapi.json by openapi-python-client, Streamlit's AppTest, the live benchmark runner
and the CLI (tests/ml/test_cli.py).
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from streamlit.testing.v1 import AppTest

from benchmarks import live
from benchmarks.services import Server, running
from ml.config import Settings
from ml.registry import Registry
from tests.conftest import encoded, photo

ROOT = Path(__file__).resolve().parents[1]
KEY = "plugin-test-key"
ORIGIN = "plugin realtime-ml-wine"


def wine_body(registry: Registry, index: int = 0) -> dict[str, Any]:
    """The plugin's example wine of cultivar index + 1, as a JSON body."""
    return msgspec.to_builtins(registry.get("wine").examples()[index])  # type: ignore[no-any-return]


# -- served by default, through the real one-process server ------------------------------------

@pytest.mark.slow
def test_the_default_server_serves_the_plugin_like_a_built_in(
        one_process_server: Server, registry: Registry) -> None:
    with httpx.Client(base_url=one_process_server.url, timeout=30) as client:
        models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert models["wine"]["state"] == "ready" and models["wine"]["origin"] == ORIGIN
        assert models["wine"]["routes"] == ["/api/predict/wine"]
        assert models["wine"]["info"]["evaluation"]["accuracy"] > 0.9
        health = client.get("/health").json()
        assert health["models"]["wine"] == "ready"

        body = wine_body(registry, 1)
        answer = client.post("/api/predict/wine", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["cultivar"] == "cultivar 2"
        assert answer.json()["model"] == "wine-cultivar-v1"
        assert set(answer.json()["probabilities"]) == {"cultivar 1", "cultivar 2", "cultivar 3"}
        again = client.post("/api/predict/wine", json=body)
        assert again.headers["server-timing"] == "cache;desc=hit"  # the engine's cache

        wrong = client.post("/api/predict/wine", json={**body, "alcohol": "strong"})
        assert wrong.status_code == 422
        assert wrong.json()["error"]["details"]["errors"][0]["field"] == "alcohol"
        missing = client.post("/api/predict/wine", json={"alcohol": 13.0})
        assert missing.status_code == 422 and missing.json()["error"]["code"] == \
            "validation_error"
        impossible = client.post("/api/predict/wine", json={**body, "magnesium": 1e9})
        assert impossible.status_code == 422
        assert "magnesium" in impossible.json()["error"]["message"]

        spec = client.get("/openapi.json").json()
        operation = spec["paths"]["/api/predict/wine"]["post"]
        request = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        query = spec["components"]["schemas"][request.rsplit("/", 1)[1]]
        assert len(query["properties"]) == 13 and query["additionalProperties"] is False
        assert query["properties"]["alcohol"]["maximum"] == 18
        response = operation["responses"]["200"]["content"]["application/json"]["schema"]
        result = spec["components"]["schemas"][response["$ref"].rsplit("/", 1)[1]]
        assert result["properties"]["cultivar"]["enum"] == ["cultivar 1", "cultivar 2",
                                                            "cultivar 3"]

        metrics = client.get("/metrics").json()
        assert metrics["models"]["wine"]["calls"] >= 1
        assert metrics["engine"]["wine"]["max_batch"] == 64  # what the model declares
        assert metrics["engine"]["wine"]["cache"]["hits"] >= 1
        text = client.get("/metrics", headers={"accept": "text/plain"}).text
    for line in ('model_calls_total{model="wine",outcome="ok"}',
                 'model_batch_size_count{model="wine"}', 'model_ready{model="wine"} 1.0',
                 'prediction_cache_total{model="wine",result="hit"}',
                 'model_queue_depth{model="wine"}',
                 'http_requests_total{method="POST",route="/api/predict/wine",status="200"}'):
        assert line in text, line


# -- a narrowed server with a broken plugin; a generated client ----------------------------------

@pytest.fixture(scope="module")
def plugin_server(settings: Settings, registry: Registry,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """ML_MODELS naming the models, the plugin among them, and a local module that fails
    to import; the plugin's batcher limits overridden from the environment."""
    registry.warmup()  # the server then loads cached artifacts
    local = tmp_path_factory.mktemp("local_models")
    (local / "broken_plugin.py").write_text(
        'raise ImportError("this model needs libgrapes, which is not installed")\n')
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu", "ML_API_KEYS": KEY,
           "ML_RATE_LIMIT_PER_SECOND": "0",
           "ML_MODELS": "sentiment,image,recommender,wine,grapes=broken_plugin:build",
           "ML_WINE_MAX_BATCH": "8", "ML_WINE_MAX_QUEUE": "3",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{local}"}
    with running("one-process", env, tmp_path_factory.mktemp("logs")) as server:
        yield server


@pytest.mark.slow
def test_a_broken_plugin_is_failed_and_the_rest_serve(plugin_server: Server) -> None:
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=plugin_server.url, headers=headers, timeout=30) as client:
        models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert models["grapes"]["state"] == "failed" and models["grapes"]["origin"] == \
            "ML_MODELS"
        assert "libgrapes" in models["grapes"]["reason"]
        assert {n for n, m in models.items() if m["state"] == "ready"} == {
            "sentiment", "image", "recommender", "wine"}
        refused = client.post("/api/predict/grapes", json={})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "model_unavailable"
        assert client.post("/api/predict/sentiment", json={"text": "lovely"}).status_code == 200
        health = client.get("/health").json()
        assert health["models"]["grapes"] == "failed" and health["status"] == "degraded"
        engine = client.get("/metrics").json()["engine"]["wine"]
        assert (engine["max_batch"], engine["max_queue"]) == (8, 3)  # ML_WINE_MAX_*


@pytest.fixture(scope="module")
def generated(plugin_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A client package generated by openapi-python-client from the live /openapi.json."""
    folder = tmp_path_factory.mktemp("generated")
    spec = folder / "openapi.json"
    spec.write_bytes(httpx.get(f"{plugin_server.url}/openapi.json", timeout=30).content)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                                 f"{os.environ.get('PATH', '')}"}  # its ruff post-hooks
    result = subprocess.run(
        [str(Path(sys.executable).parent / "openapi-python-client"), "generate", "--path",
         str(spec), "--meta", "none", "--output-path", str(folder / "realtime_client")],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout, result.stdout  # nothing of the API left out
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("realtime_client")
    finally:
        sys.path.remove(str(folder))


@pytest.mark.slow
def test_a_generated_client_calls_every_operation(plugin_server: Server, generated: Any,
                                                  registry: Registry) -> None:
    """Every operation of the generated client is called and answers; a new operation
    without a call here fails the test."""
    ops = importlib.import_module("realtime_client.api.default")
    models = importlib.import_module("realtime_client.models")
    types = importlib.import_module("realtime_client.types")
    names = {p.stem for p in Path(ops.__file__).parent.glob("*.py") if p.stem != "__init__"}
    client = generated.AuthenticatedClient(base_url=plugin_server.url, token=KEY,
                                           timeout=httpx.Timeout(30.0))
    anonymous = generated.Client(base_url=plugin_server.url, timeout=httpx.Timeout(30.0))
    with client, anonymous:
        called = calls(client, anonymous, models, types, registry)
    assert names == set(called), names ^ set(called)


def calls(client: Any, anonymous: Any, models: Any, types: Any,
          registry: Registry) -> dict[str, Any]:
    """Every operation of the generated client, called with real inputs and checked."""
    png = encoded(photo("coffee"))
    called: dict[str, Any] = {}

    def call(name: str, *, as_client: Any = client, **kwargs: Any) -> Any:
        module = importlib.import_module(f"realtime_client.api.default.{name}")
        response = module.sync_detailed(client=as_client, **kwargs)
        called[name] = response
        return response

    sentiment = call("predict_sentiment", body=models.SentimentQuery.from_dict(
        {"text": "I love this", "options": {"detailed": True}}))
    assert sentiment.status_code == 200 and sentiment.parsed.sentiment == "positive"
    assert sentiment.parsed.terms  # the optional parts decode too

    batch = call("predict_batch", body=models.BatchRequest.from_dict(
        {"texts": ["great", "awful"], "options": {"detailed": False}}))
    assert [r.sentiment for r in batch.parsed.results] == ["positive", "negative"]

    upload = call("predict_image", body=models.ImageQueryMultipart(
        image=types.File(payload=io.BytesIO(png), file_name="coffee.png",
                         mime_type="image/png"), top_k=2))
    assert upload.status_code == 200, upload.content
    assert upload.parsed.predictions[0].label == "espresso" and len(
        upload.parsed.predictions) == 2
    as_json = importlib.import_module("realtime_client.api.default.predict_image").sync(
        client=client, body=models.ImageQueryBody.from_dict(
            {"image_base64": base64.b64encode(png).decode()}))
    assert as_json.predictions[0].label == "espresso"

    for name in ("predict_recommend", "predict_recommender"):  # the spec's route and its model
        picks = call(name, body=models.RecommendQuery.from_dict(
            {"user_id": "1", "limit": 3, "context": {"category": "PRODUCE"}}))
        assert picks.status_code == 200 and len(picks.parsed.recommendations) == 3

    wine = call("predict_wine", body=models.WineQuery.from_dict(wine_body(registry, 2)))
    assert wine.status_code == 200 and wine.parsed.cultivar == "cultivar 3"

    listed = call("get_api_models")
    assert {m.name for m in listed.parsed.models} == {"sentiment", "image", "recommender",
                                                      "wine", "grapes"}
    assert call("get_health", as_client=anonymous).parsed.status == "degraded"  # grapes failed
    assert call("get_health_live", as_client=anonymous).parsed.status == "alive"
    assert call("get_health_ready", as_client=anonymous).parsed.status == "ready"
    assert call("get_metrics").parsed.models["wine"]["calls"] >= 1
    prometheus = call("get_metrics_prometheus")
    assert b'model_calls_total{model="wine",outcome="ok"}' in prometheus.content

    refused = importlib.import_module("realtime_client.api.default.get_metrics").sync_detailed(
        client=anonymous)
    assert refused.status_code == 401  # the document declares the key; the server wants it
    return called


# -- the pages, headless ------------------------------------------------------------------------

def test_the_generic_page_predicts_with_a_form_from_the_query(registry: Registry) -> None:
    registry.warmup()
    app = AppTest.from_string(textwrap.dedent("""
        from views.model import try_it
        try_it("wine")
    """), default_timeout=90)
    app.run()
    assert not app.exception
    assert app.title[0].value == "Wine cultivar"
    assert len(app.number_input) == 13  # one per measurement, from the query type
    alcohol = app.number_input(key="wine.alcohol")
    assert (alcohol.min, alcohol.max) == (8.0, 18.0)  # the query's declared bounds
    first, third = registry.get("wine").examples()[0], registry.get("wine").examples()[2]
    assert alcohol.value == pytest.approx(first.alcohol)  # defaults: the model's example
    for field in msgspec.structs.fields(type(third)):  # a wine of the third cultivar
        app.number_input(key=f"wine.{field.name}").set_value(getattr(third, field.name))
    app.button[0].click().run()
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["cultivar"] == "cultivar 3"
    assert 0.5 < float(metrics["confidence"]) <= 1
    assert any("in-process" in c.value for c in app.caption)  # served through the engine
    assert any(ORIGIN in c.value for c in app.caption)
    assert app.get("vega_lite_chart")  # the probabilities as a bar chart
    app.button[0].click().run()  # the same wine again: the cache answers, and says so
    assert any("answered from the prediction cache" in c.value for c in app.caption)


def test_the_overview_shows_the_plugin_card(registry: Registry) -> None:
    registry.warmup()
    app = AppTest.from_file(str(ROOT / "views" / "home.py"), default_timeout=90)
    app.run()
    assert not app.exception
    text = " ".join(m.value for m in app.markdown) + " ".join(c.value for c in app.caption)
    assert "**wine**" in text and f"from {ORIGIN}" in text
    accuracy = registry.get("wine").info()["evaluation"]["accuracy"]
    assert f"{accuracy:.1%}" in [m.value for m in app.metric]


def test_the_benchmarks_page_offers_the_plugin(registry: Registry) -> None:
    registry.warmup()
    app = AppTest.from_file(str(ROOT / "views" / "benchmarks.py"), default_timeout=90)
    app.run()
    assert "wine" in app.selectbox[0].options


@pytest.mark.slow
def test_a_live_benchmark_run_measures_the_plugin_on_every_path(
        plugin_server: Server, registry: Registry) -> None:
    registry.warmup()
    run = live.start(registry, model="wine", paths=("in-process", "http", "hop"),
                     concurrency=2, seconds=1, base_url=plugin_server.url,
                     headers={"authorization": f"Bearer {KEY}"})
    deadline = time.monotonic() + 180
    while run.active and time.monotonic() < deadline:
        run.heartbeat()
        time.sleep(0.2)
    assert run.state == "done", run.message
    for path in ("in-process", "http", "hop"):
        result = run.results[path]
        assert run.samples[path] and result.errors == 0, (path, result.statuses)
        assert set(result.statuses) <= {200}, (path, result.statuses)
    summary = {row["path"]: row for row in run.summary()}
    assert summary[live.PATH_LABELS["in-process"]]["requests/s"] > 0
    assert json.dumps(summary)  # what the page charts
