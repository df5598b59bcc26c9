"""The Open Inference Protocol (KServe V2) routes in process: signatures derived from the
model contract, the binary tensor extension both ways, batches as one engine call, and the
API's keys, rate limits, request ids and metrics on /v2 as everywhere else."""

from __future__ import annotations

import json
import struct
from typing import Any

import msgspec
import pytest

from api import tensors
from ml.image import ImageQuery, ImageResult
from ml.recommender import Recommendations, RecommendQuery
from ml.sentiment import SentimentQuery, SentimentResult
from tests.conftest import encoded, photo

INFER = "/v2/models/sentiment/infer"


def texts(*values: str) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "shape": [len(values)], "datatype": "BYTES",
                        "data": list(values)}]}


@pytest.mark.parametrize(("query", "result", "inputs", "parameters", "outputs"), [
    pytest.param(SentimentQuery, SentimentResult, [("text", "BYTES", [-1])], {"detailed": "bool"},
                 [("sentiment", "BYTES", [-1]), ("confidence", "FP32", [-1]),
                  ("score", "FP32", [-1]), ("probabilities", "FP32", [-1, 3]),
                  ("terms", "BYTES", [-1])], id="sentiment"),
    pytest.param(ImageQuery, ImageResult, [("image", "BYTES", [-1])], {"top_k": "int64"},
                 [("predictions", "BYTES", [-1]), ("width", "INT64", [-1]),
                  ("height", "INT64", [-1])], id="image"),
    pytest.param(RecommendQuery, Recommendations, [("user_id", "BYTES", [-1])],
                 {"category": "string", "limit": "int64", "exclude_purchased": "bool",
                  "kind": "string", "per_type": "int64", "groceries_only": "bool"},
                 [("recommendations", "BYTES", [-1]), ("strategy", "BYTES", [-1]),
                  ("user_id", "BYTES", [-1]), ("category", "BYTES", [-1])], id="recommender"),
])
def test_the_signature_is_derived_from_query_and_result(
        query: Any, result: Any, inputs: list[Any], parameters: dict[str, str],
        outputs: list[Any]) -> None:
    sig = tensors.signature(query, result)
    assert [(t.name, t.datatype, list(t.shape)) for t in sig.inputs] == inputs
    assert {p.name: p.kind for p in sig.parameters} == parameters
    assert [(t.name, t.datatype, list(t.shape)) for t in sig.outputs] == outputs


def test_every_registered_model_has_metadata_plugins_included(client) -> None:  # type: ignore[no-untyped-def]
    names = [m["name"] for m in client.get("/api/models").json()["models"]]
    assert "wine" in names
    for name in names:
        metadata = client.get(f"/v2/models/{name}").json()
        assert metadata["name"] == name and metadata["inputs"] and metadata["outputs"]
        version = metadata["versions"][0]
        assert client.get(f"/v2/models/{name}/versions/{version}/ready").json() == {
            "name": name, "ready": True}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_n_texts_are_one_engine_call(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    engine = client.app.state.service.engine
    calls: list[int] = []
    many = engine.apredict_many

    async def counted(name: str, queries: Any, **kwargs: Any) -> Any:
        calls.append(len(queries))
        return await many(name, queries, **kwargs)

    monkeypatch.setattr(engine, "apredict_many", counted)
    body = client.post(INFER, json={**texts("I love it", "awful", "a chair"),
                                    "id": "req-7"}).json()
    assert calls == [3]
    assert body["id"] == "req-7" and body["model_version"] == "sentiment-v1"
    labels = next(o for o in body["outputs"] if o["name"] == "sentiment")
    assert labels["shape"] == [3] and labels["data"][:2] == ["positive", "negative"]


def test_binary_data_both_ways(client) -> None:  # type: ignore[no-untyped-def]
    png = encoded(photo("coffee"))
    head = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(png) + 4}}],
                       "parameters": {"top_k": 2},
                       "outputs": [{"name": "width", "parameters": {"binary_data": True}},
                                   {"name": "predictions"}]}).encode()
    response = client.post("/v2/models/image/infer",
                           content=head + struct.pack("<I", len(png)) + png,
                           headers={"inference-header-content-length": str(len(head)),
                                    "content-type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:length])
    width, predictions = answer["outputs"]
    assert width["parameters"]["binary_data_size"] == 8
    assert struct.unpack("<q", response.content[length:]) == (photo("coffee").width,)
    assert json.loads(predictions["data"][0])[0]["label"] == "espresso"
    assert len(json.loads(predictions["data"][0])) == 2


def test_the_spec_route_and_v2_agree(make_client) -> None:  # type: ignore[no-untyped-def]
    # V2 tensors carry full precision; the spec route's floats are rounded for people
    # unless ML_RESPONSE_DIGITS=0
    client = make_client(rate_limit_per_second=0.0, response_digits=0)
    spec = client.post("/api/predict/sentiment",
                       json={"text": "best trip ever", "options": {"detailed": True}}).json()
    v2 = client.post(INFER, json={**texts("best trip ever"),
                                  "parameters": {"detailed": True}}).json()
    got = {o["name"]: o["data"] for o in v2["outputs"]}
    assert got["sentiment"] == [spec["sentiment"]]
    assert got["confidence"] == [spec["confidence"]] and got["score"] == [spec["score"]]
    assert got["probabilities"] == [spec["probabilities"][k]
                                    for k in ("negative", "neutral", "positive")]
    assert msgspec.json.decode(got["terms"][0]) == spec["terms"]


def test_keys_rate_limits_request_ids_and_metrics_apply(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(api_keys=("k1",), rate_limit_per_second=0.001, rate_limit_burst=2)
    assert client.get("/v2/health/live").status_code == 200  # open, like /health
    assert client.get("/v2/health/ready").status_code == 200
    for path in ("/v2", "/v2/models/sentiment"):
        refused = client.get(path)
        assert refused.status_code == 401 and set(refused.json()) == {"error"}
    key = {"x-api-key": "k1", "x-request-id": "trace-1"}
    ok = client.post(INFER, json=texts("great"), headers=key)
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "trace-1"
    assert ok.json()["id"] == "trace-1"
    client.post(INFER, json=texts("great"), headers=key)
    limited = client.post(INFER, json=texts("great"), headers=key)
    assert limited.status_code == 429 and "retry-after" in limited.headers
    assert isinstance(limited.json()["error"], str)
    metrics = client.get("/metrics/prometheus", headers=key).text
    assert f'route="{INFER}"' in metrics


def test_deadlines_apply(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(rate_limit_per_second=0.0)
    bad = client.post(INFER, json=texts("x"), headers={"x-request-timeout-ms": "0"})
    assert bad.status_code == 400 and "x-request-timeout-ms" in bad.json()["error"]
