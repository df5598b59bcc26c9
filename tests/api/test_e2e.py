"""End to end against real servers on 127.0.0.1: the API alone and the one-process app."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.services import Server, running
from ml.config import Settings
from tests.api.servers import http_server
from tests.conftest import encoded, photo

pytestmark = pytest.mark.slow
KEY = "e2e-secret-key"
PNG = encoded(photo("coffee"))


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    routes = {"/coffee.png": (200, {"content-type": "image/png"}, PNG, 0.0),
              "/slow.png": (200, {"content-type": "image/png"}, PNG, 2.0)}
    with http_server(routes) as base:
        yield base


@pytest.fixture(scope="module")
def api_server(settings: Settings, registry, tmp_path_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    registry.warmup()  # the server then loads cached artifacts
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu", "ML_API_KEYS": KEY,
           "ML_RATE_LIMIT_PER_SECOND": "4", "ML_RATE_LIMIT_BURST": "6",
           "ML_MAX_BODY_BYTES": str(2 << 20), "ML_URL_FETCH_ALLOW": "127.0.0.0/8"}
    with running("api", env, tmp_path_factory.mktemp("logs")) as server:
        yield server


@pytest.fixture
def one_process(one_process_server: Server) -> Server:
    return one_process_server


def authed(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {KEY}"},
                        timeout=30)


# -- the API alone ----------------------------------------------------------------------------

def test_api_alone_serves_every_model(api_server: Server, image_host: str) -> None:
    with authed(api_server) as client:
        assert client.post("/api/predict/sentiment",
                           json={"text": "I love it"}).json()["sentiment"] == "positive"
        upload = client.post("/api/predict/image", files={"image": ("c.png", PNG)})
        assert upload.json()["predictions"][0]["label"] == "espresso"
        fetched = client.post("/api/predict/image",
                              json={"image_url": f"{image_host}/coffee.png"})
        assert fetched.json()["predictions"][0]["label"] == "espresso"
        recommended = client.post("/api/predict/recommend", json={"user_id": "1", "limit": 3})
        assert len(recommended.json()["recommendations"]) == 3
    time.sleep(1.6)  # give the rate limit its tokens back for the next tests


def test_rest_client_example(api_server: Server) -> None:
    import subprocess
    import sys

    time.sleep(1.6)
    result = subprocess.run([sys.executable, "examples/rest_client.py", api_server.url,
                             "--api-key", KEY], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert "health: healthy" in result.stdout
    assert "error handling: 422 invalid_input" in result.stdout
    time.sleep(1.6)


def test_api_alone_auth(api_server: Server) -> None:
    anonymous = httpx.post(f"{api_server.url}/api/predict/sentiment", json={"text": "hi"})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert httpx.get(f"{api_server.url}/health/live").status_code == 200
    time.sleep(0.3)


def test_api_alone_ssrf_refusals(api_server: Server) -> None:
    with authed(api_server) as client:
        for url in ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x.png",
                    "http://[::1]/x.png", "file:///etc/passwd"):
            response = client.post("/api/predict/image", json={"image_url": url})
            assert response.status_code == 422, url
            assert response.json()["error"]["code"] == "url_not_allowed"
            time.sleep(0.26)


def test_api_alone_body_limit_streamed(api_server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(64):
            yield b"x" * 65536
        yield b'"}'

    with authed(api_server) as client:
        response = client.post("/api/predict/sentiment", content=chunks(),
                               headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    time.sleep(0.3)


def test_api_alone_rate_limit_then_recovery(api_server: Server) -> None:
    time.sleep(1.6)
    with authed(api_server) as client:
        codes = [client.post("/api/predict/sentiment", json={"text": "hi"}).status_code
                 for _ in range(12)]
        assert 429 in codes and codes[0] == 200
        limited = client.post("/api/predict/sentiment", json={"text": "hi"})
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        time.sleep(1.6)
        assert client.post("/api/predict/sentiment", json={"text": "hi"}).status_code == 200


def test_graceful_shutdown_finishes_the_request_in_flight(
    settings: Settings, registry, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    registry.warmup()
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu",
           "ML_URL_FETCH_ALLOW": "127.0.0.0/8", "ML_URL_FETCH_TIMEOUT_S": "10"}
    arrived = threading.Event()
    slow_host = http_server({"/slow.png": (200, {"content-type": "image/png"}, PNG, 2.0)},
                            arrived)
    with slow_host as image_host, running("api", env, tmp_path) as server:
        result: dict[str, httpx.Response] = {}

        def slow_request() -> None:
            result["response"] = httpx.post(f"{server.url}/api/predict/image",
                                            json={"image_url": f"{image_host}/slow.png"},
                                            timeout=30)

        thread = threading.Thread(target=slow_request)
        thread.start()
        assert arrived.wait(20), "the request never reached the image host"
        exit_code = server.stop()  # while the request waits on the slow image host
        thread.join(30)
        assert result["response"].status_code == 200
        assert result["response"].json()["predictions"][0]["label"] == "espresso"
        # uvicorn drains, runs the lifespan shutdown, then re-raises SIGTERM for the caller
        assert exit_code in (0, -15)
        log = server.log.read_text()
        assert log.index("Waiting for connections to close") < log.index(
            "Application shutdown complete")
        assert re.search(r'"path": ?"/api/predict/image", ?"status": ?200', log)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health/live", timeout=2)


# -- the one-process app (UI + API on one port) --------------------------------------------

def test_one_process_serves_ui_and_api_on_one_port(one_process: Server) -> None:
    ui = httpx.get(f"{one_process.url}/", timeout=10)
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    assert httpx.get(f"{one_process.url}/_stcore/health", timeout=10).status_code == 200
    response = httpx.post(f"{one_process.url}/api/predict/sentiment",
                          json={"text": "what a great day"}, timeout=10)
    assert response.json()["sentiment"] == "positive"
    assert response.headers["x-request-id"]
    upload = httpx.post(f"{one_process.url}/api/predict/image",
                        files={"image": ("c.png", PNG)}, timeout=30)
    assert upload.json()["predictions"][0]["label"] == "espresso"


def test_one_process_api_errors_are_json_not_the_ui(one_process: Server) -> None:
    for method, path, status in (("GET", "/api/nope", 404),
                                 ("GET", "/api/predict/sentiment", 405),
                                 ("GET", "/health/nope", 404)):
        response = httpx.request(method, f"{one_process.url}{path}", timeout=10)
        assert response.status_code == status, path
        assert response.json()["error"]["code"] == \
            {404: "not_found", 405: "method_not_allowed"}[status], path
    refused = httpx.post(f"{one_process.url}/api/predict/image",
                         json={"image_url": "http://127.0.0.1:8501/"}, timeout=10)
    assert refused.json()["error"]["code"] == "url_not_allowed"


def test_one_process_loads_each_model_once(one_process: Server) -> None:
    models = httpx.get(f"{one_process.url}/api/models", timeout=10).json()["models"]
    assert {m["name"]: m["loads"] for m in models} == {  # the built-ins and the plugin
        "sentiment": 1, "image": 1, "recommender": 1, "wine": 1}
    health = httpx.get(f"{one_process.url}/health", timeout=10).json()
    assert health["status"] == "healthy"
    metrics = httpx.get(f"{one_process.url}/metrics/prometheus", timeout=10)
    assert "http_requests_total" in metrics.text


def test_streamlit_run_server_py_still_serves_ui_and_api(settings: Settings, registry,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path) -> None:
    """Streamlit Community Cloud runs `streamlit run <main file>`."""
    registry.warmup()
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu",
           "ML_RATE_LIMIT_PER_SECOND": "0.1", "ML_RATE_LIMIT_BURST": "3"}
    with running("streamlit-run", env, tmp_path) as server:
        assert httpx.get(f"{server.url}/", timeout=10).status_code == 200
        response = httpx.post(f"{server.url}/api/predict/sentiment", json={"text": "great"},
                              timeout=10)
        assert response.json()["sentiment"] == "positive"
        # a forged X-Forwarded-For per request buys no fresh rate-limit bucket here either
        statuses = [httpx.post(f"{server.url}/api/predict/sentiment", json={"text": "hi"},
                               headers={"x-forwarded-for": f"203.0.113.{i}"},
                               timeout=10).status_code for i in range(4)]
        assert statuses.count(429) >= 2, statuses


def test_streamlit_run_app_py_serves_the_ui_alone(settings: Settings, tmp_path: Path) -> None:
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu"}
    with running("ui-only", env, tmp_path) as server:
        page = httpx.get(f"{server.url}/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert httpx.get(f"{server.url}/_stcore/health", timeout=10).text == "ok"


def test_overload_is_refused_fast_and_the_server_recovers(settings: Settings, registry,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    """Far more image requests than the model can take: the excess is refused at once with
    503, the accepted ones keep a bounded wait, and the server is normal afterwards."""
    import base64
    import json
    import statistics

    from benchmarks.load import http_load

    registry.warmup()
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu", "ML_MODELS": "image",
           "ML_RATE_LIMIT_PER_SECOND": "0", "ML_CACHE_ENTRIES": "0", "ML_IMAGE_MAX_QUEUE": "4",
           "ML_THREADPOOL_SIZE": "4"}
    body = json.dumps({"image_base64": base64.b64encode(encoded(photo("coffee"), "JPEG"))
                       .decode()}).encode()
    with running("api", env, tmp_path) as server:
        flood = http_load(server.url, "/api/predict/image", [body], concurrency=48,
                          requests=4000, seconds=4.0)
        assert set(flood.statuses) <= {200, 503}, flood.statuses
        assert flood.statuses.get(503, 0) > 0 and flood.statuses.get(200, 0) > 0
        assert flood.count == sum(flood.statuses.values())  # every request got an answer
        # refusals do not wait for the model; accepted requests wait for a short queue only
        assert statistics.median(flood.refused) < 0.5
        assert max(flood.latencies) < 8.0  # under the 10 s deadline: nothing timed out
        with httpx.Client(base_url=server.url, timeout=10) as client:
            refused = client.get("/metrics").json()["requests"]["by_status"].get("503", 0)
            assert refused == flood.statuses[503]
            assert client.get("/health").json()["status"] == "healthy"
            started = time.monotonic()
            response = client.post("/api/predict/image", content=body,
                                   headers={"content-type": "application/json"})
            assert response.status_code == 200
            assert response.json()["predictions"][0]["label"] == "espresso"
            assert time.monotonic() - started < 5.0


def test_every_request_under_load_is_logged_and_counted_once(settings: Settings, registry,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    """The access log is written in batches and the metrics without locks on the hot path:
    under load, the one process still logs and counts each request exactly once, and
    uvicorn's own access line (which Streamlit's logging set-up used to switch on) is
    absent."""
    import json

    from benchmarks.load import http_load

    registry.warmup()
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu",
           "ML_RATE_LIMIT_PER_SECOND": "0", "ML_CACHE_ENTRIES": "0"}
    route = "/api/predict/sentiment"
    with running("one-process", env, tmp_path) as server:
        load = http_load(server.url, route, [b'{"text": "fine"}', b'{"text": ""}'],
                         concurrency=16, requests=3000, seconds=60)
        assert load.count == 3000 and set(load.statuses) == {200, 422}
        by_route = httpx.get(f"{server.url}/metrics", timeout=10).json()["requests"]
        assert by_route["by_route"][route] == 3000
        prometheus = httpx.get(f"{server.url}/metrics/prometheus", timeout=10).text
        for status, count in load.statuses.items():
            line = (f'http_requests_total{{method="POST",route="{route}",'
                    f'status="{status}"}} {count:.1f}')
            assert line in prometheus, status
        page = httpx.get(f"{server.url}/", timeout=10)  # the UI: into the same JSON log
        asset = re.search(r'src="\.?/?(static/[^"]+\.js)"', page.text)
        assert page.status_code == 200 and asset, page.text[:300]
        assert httpx.get(f"{server.url}/{asset.group(1)}", timeout=10).status_code == 200
        assert httpx.get(f"{server.url}/_stcore/health", timeout=10).status_code == 200
        assert server.stop() in (0, -15)  # the access log's last batch goes out on shutdown
    log = server.log.read_text()
    lines = [json.loads(x) for x in log.splitlines() if x.startswith('{"event":"request"')]
    served = [x for x in lines if x["path"] == route]
    assert len(served) == 3000
    assert len({x["request_id"] for x in served}) == 3000
    assert {s: sum(x["status"] == s for x in served) for s in (200, 422)} == load.statuses
    assert f'"POST {route} HTTP/1.1"' not in log  # no uvicorn access line beside ours
    ui = [(x["method"], x["path"], x["status"]) for x in lines if x["path"] != route]
    assert ("GET", "/", 200) in ui  # a page load is logged, static assets and pings are not
    assert not [x for x in ui if x[1].startswith(("/static/", "/_stcore/"))], ui
    assert '"GET / HTTP/1.1"' not in log
