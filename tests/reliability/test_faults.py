"""Faults on real servers: broken weights, a corrupted recommender artifact, shutdown under
load. (A raising model -> 500 with a request id, and a hanging model -> 504 at the deadline,
are in tests/api/test_routes.py; a corrupted sentiment artifact in tests/ml.)"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.load import LoadResult, http_load
from benchmarks.services import running
from ml.artifacts import ArtifactStore
from ml.config import Settings

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("weights", ["missing", "corrupted"])
def test_broken_image_weights_fail_only_the_image_model(settings: Settings, registry,  # type: ignore[no-untyped-def]
                                                       tmp_path: Path, weights: str) -> None:
    registry.warmup()
    path = tmp_path / "weights.pth"
    if weights == "corrupted":
        path.write_bytes(b"PK\x03\x04 this is not a torch checkpoint" * 100)
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu",
           "ML_IMAGE_WEIGHTS": str(path), "ML_RATE_LIMIT_PER_SECOND": "0"}
    with running("api", env, tmp_path) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert health["models"] == {"sentiment": "ready", "image": "failed",
                                    "recommender": "ready", "wine": "ready"}
        models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        reason = models["image"]["reason"]
        assert ("No such file" in reason) if weights == "missing" else reason
        refused = client.post("/api/predict/image", json={"image_base64": "aGk="})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "model_unavailable"
        assert client.post("/api/predict/sentiment", json={"text": "ok"}).status_code == 200
        assert client.post("/api/predict/recommend", json={"user_id": "1"}).status_code == 200
        assert client.get("/health/ready").status_code == 200  # it can still serve


def test_corrupted_recommender_artifact_is_rebuilt(settings: Settings, registry,  # type: ignore[no-untyped-def]
                                                   tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from ml.recommender import build

    original = registry.get("recommender")
    store = ArtifactStore(tmp_path)
    shutil.copy(ArtifactStore(settings.cache_dir).path("recommender"),
                store.path("recommender"))
    blob = store.path("recommender").read_bytes()
    store.path("recommender").write_bytes(blob[:100] + b"\x00" * 64 + blob[164:])
    with caplog.at_level(logging.WARNING):
        rebuilt = build(settings.replace(cache_dir=tmp_path), store)
    assert "rebuilding" in caplog.text
    user = original.known_users()[0]
    assert rebuilt.recommend(user, limit=5).strategy == "als"
    assert rebuilt.info()["evaluation"].keys() == original.info()["evaluation"].keys()
    assert store.path("recommender").read_bytes() != blob[:100] + b"\x00" * 64 + blob[164:]


def test_shutdown_under_load_finishes_what_is_in_flight(settings: Settings, registry,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    """SIGTERM while image requests are queued and computing: every request the server took
    is answered 200; the only losses are requests written to a connection as it closed."""
    import base64

    from tests.conftest import encoded, photo

    registry.warmup()
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu",
           "ML_RATE_LIMIT_PER_SECOND": "0", "ML_CACHE_ENTRIES": "0"}
    image = json.dumps({"image_base64": base64.b64encode(
        encoded(photo("coffee"), "JPEG")).decode()}).encode()
    texts = [json.dumps({"text": f"request {i} is lovely"}).encode() for i in range(100)]
    results: dict[str, LoadResult] = {}
    began: dict[str, float] = {}
    with running("api", env, tmp_path) as server:
        def load(route: str, bodies: list[bytes], concurrency: int) -> None:
            began[route] = time.perf_counter()
            results[route] = http_load(server.url, route, bodies, concurrency=concurrency,
                                       requests=10**9, seconds=8)

        threads = [threading.Thread(target=load, args=("/api/predict/image", [image], 8)),
                   threading.Thread(target=load, args=("/api/predict/sentiment", texts, 8))]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        signalled = time.perf_counter()
        exit_code = server.stop()
        for thread in threads:
            thread.join(30)
        log = server.log.read_text()
    assert exit_code in (0, -15)
    for route, result in results.items():
        assert result.answered > 10, route
        # everything answered was answered properly: no 5xx, no half responses
        assert set(result.statuses) == {200}, (route, result.statuses)
        # each connection can lose at most the one request it wrote as the server closed it
        assert result.sent - result.answered <= 8, (route, result.sent, result.answered)
    assert "Traceback" not in log
    # image requests were in flight at the signal and were answered after it
    at = signalled - began["/api/predict/image"]
    finished_after = [(sent, latency) for sent, latency in results["/api/predict/image"].samples
                      if sent < at < sent + latency]
    assert finished_after, "no request was in flight at the signal"
    assert log.index("Shutting down") < log.index("Application shutdown complete")
