"""Batching, caching, deadlines and backpressure as API clients see them."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.testclient import TestClient

from ml.batching import Batcher
from ml.registry import Entry, Registry
from ml.sentiment import SentimentQuery
from tests.api.test_routes import assert_error
from tests.conftest import SentimentStub


def timing(response: Any) -> dict[str, str]:
    """Server-Timing as {name: "dur=..." or 'desc=...'}."""
    parts = [p.strip() for p in response.headers["server-timing"].split(",")]
    return {p.split(";")[0]: p.split(";", 1)[1] for p in parts}


def test_predictions_say_where_their_time_went(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(rate_limit_per_second=0.0, cache_entries=0)
    response = client.post("/api/predict/sentiment", json={"text": "what a lovely day"})
    assert response.status_code == 200
    parts = timing(response)
    assert set(parts) == {"queue", "compute", "batch"} and parts["batch"] == 'desc="1"'
    queue_ms = float(parts["queue"].removeprefix("dur="))
    compute_ms = float(parts["compute"].removeprefix("dur="))
    assert abs(response.json()["latency_ms"] - (queue_ms + compute_ms)) < 0.01


def test_repeated_requests_are_served_from_the_cache(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(rate_limit_per_second=0.0)
    body = {"text": "the cache should remember this one", "options": {"detailed": True}}
    first = client.post("/api/predict/sentiment", json=body)
    second = client.post("/api/predict/sentiment", json=body)
    assert timing(second) == {"cache": "desc=hit"}
    strip = {"latency_ms"}
    assert {k: v for k, v in first.json().items() if k not in strip} == \
        {k: v for k, v in second.json().items() if k not in strip}
    engine = client.get("/metrics").json()["engine"]["sentiment"]
    assert engine["cache"]["hits"] >= 1 and engine["batching"] is True


def test_concurrent_requests_are_batched_and_metrics_explain_latency(  # type: ignore[no-untyped-def]
    make_client, warm_registry: Registry
) -> None:
    client = make_client(rate_limit_per_second=0.0, cache_entries=0)
    texts = [f"request number {i} is {'great' if i % 2 else 'awful'}" for i in range(200)]
    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(
            lambda t: client.post("/api/predict/sentiment", json={"text": t}), texts))
    assert all(r.status_code == 200 for r in responses)
    model = warm_registry.get("sentiment")
    assert [r.json()["sentiment"] for r in responses] == \
        [model.predict_one(t).sentiment for t in texts]  # type: ignore[attr-defined]
    metrics = client.get("/metrics").json()["models"]["sentiment"]
    assert metrics["items"] == 200 and 1 <= metrics["calls"] <= 200
    assert {"p50_ms", "p99_ms"} <= set(metrics["queue_wait"])
    text = client.get("/metrics/prometheus").text
    for name in ("model_queue_wait_seconds_bucket", "model_batch_size_bucket",
                 "model_inference_seconds_bucket", "prediction_cache_total",
                 "model_queue_depth"):
        assert name in text, name


def assert_concurrent_requests_share_calls(client: TestClient, model: Gated) -> None:
    """Requests that queue while the model computes go to it together, as one call."""
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(client.post, "/api/predict/sentiment", json={"text": "first"})
        assert model.entered.wait(10), "the first request never reached the model"
        rest = [pool.submit(client.post, "/api/predict/sentiment", json={"text": f"t{i}"})
                for i in range(8)]
        queued_by = time.monotonic() + 10
        while client.get("/metrics").json()["engine"]["sentiment"]["queued"] < 8:
            assert time.monotonic() < queued_by, "the requests never queued"
            time.sleep(0.01)
        model.gate.set()
        assert all(f.result(30).status_code == 200 for f in [first, *rest])
    assert model.calls == [1, 8], model.calls
    metrics = client.get("/metrics").json()["models"]["sentiment"]
    assert metrics["items"] == 9 and metrics["calls"] == 2
    assert metrics["batch_size"]["max"] == 8


def test_requests_that_queue_together_share_one_model_call(  # type: ignore[no-untyped-def]
    make_client, warm_registry: Registry
) -> None:
    assert_concurrent_requests_share_calls(*gated_client(make_client, warm_registry))


def test_the_batching_check_fails_for_a_batcher_that_never_joins(  # type: ignore[no-untyped-def]
    make_client, warm_registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mutation: a batcher that dispatches every item alone must fail the check above."""
    monkeypatch.setattr(Batcher, "_collect", lambda self, batch: False)
    with pytest.raises(AssertionError, match=r"\[1, 1, 1"):
        assert_concurrent_requests_share_calls(*gated_client(make_client, warm_registry))


def test_request_timeout_header_is_checked(client: TestClient) -> None:
    for bad in ("abc", "0", "-5", "1.5", "99999999"):
        error = assert_error(client.post("/api/predict/sentiment", json={"text": "hi"},
                                         headers={"x-request-timeout-ms": bad}),
                             400, "invalid_timeout")
        assert "x-request-timeout-ms" in error["message"]
    ok = client.post("/api/predict/sentiment", json={"text": "hi"},
                     headers={"x-request-timeout-ms": "5000"})
    assert ok.status_code == 200


class Gated(SentimentStub):
    """A sentiment model whose predictions wait for a gate (or a timeout)."""

    version = "gated-v1"

    def __init__(self, real: Any) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()  # a call is waiting at the gate
        self.calls: list[int] = []  # items per call, in call order
        self.real = real

    def prepare(self, query: SentimentQuery) -> tuple[str, bool]:
        return self.real.prepare(query)  # type: ignore[no-any-return]

    def predict(self, items: Any) -> list[Any]:
        self.calls.append(len(items))
        self.entered.set()
        self.gate.wait(10)
        return self.real.predict(items)  # type: ignore[no-any-return]


def gated_client(make_client, warm_registry: Registry, **changes: Any) -> tuple[Any, Gated]:  # type: ignore[no-untyped-def]
    model = Gated(warm_registry.get("sentiment"))
    registry = Registry(warm_registry.settings, entries={"sentiment": Entry.of(model)})
    client = make_client(registry=registry, rate_limit_per_second=0.0, cache_entries=0,
                         **changes)
    return client, model


def test_a_shorter_deadline_per_request_is_honoured(make_client, warm_registry: Registry) -> None:  # type: ignore[no-untyped-def]
    client, model = gated_client(make_client, warm_registry)
    started = time.monotonic()
    assert_error(client.post("/api/predict/sentiment", json={"text": "hi"},
                             headers={"x-request-timeout-ms": "150"}), 504, "deadline_exceeded")
    assert time.monotonic() - started < 5  # the default deadline (10 s) was not used
    model.gate.set()
    assert client.post("/api/predict/sentiment", json={"text": "hi"}).status_code == 200


def test_a_full_queue_answers_503_with_retry_after_at_once(make_client,  # type: ignore[no-untyped-def]
                                                         warm_registry: Registry) -> None:
    client, model = gated_client(make_client, warm_registry,
                                 tuned={"sentiment": {"max_queue": 2, "max_batch": 2}})
    with ThreadPoolExecutor(12) as pool:
        pending = [pool.submit(client.post, "/api/predict/sentiment", json={"text": f"t{i}"})
                   for i in range(12)]
        time.sleep(1.0)  # all of them reached the model's queue or were refused
        refused = [f.result() for f in pending if f.done()]
        model.gate.set()
        answered = [f.result(30) for f in pending]
    assert refused, "nothing was refused while the queue was full"
    for response in refused:
        assert_error(response, 503, "overloaded")
        assert int(response.headers["retry-after"]) >= 1
    statuses = sorted(r.status_code for r in answered)
    assert statuses.count(200) >= 2 and set(statuses) <= {200, 503}
    # the queue drained: the service accepts work again
    assert client.post("/api/predict/sentiment", json={"text": "after"}).status_code == 200
