"""The REST contract as a client sees it: one set of cases run against any server (the one
process and the Ray Serve cluster run the same set: tests/cluster/test_cluster.py).

Each case sends one request and states what must come back: the status, the error code
when there is one, and the fields of the body. `observe` runs them all and returns what
each case saw, in a form two servers can be compared by (answers without timings).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import encoded, photo

KEY = "contract-secret-key"
PNG = encoded(photo("coffee"))
AUTH = {"authorization": f"Bearer {KEY}"}


@dataclass(frozen=True)
class Case:
    """One request and what the contract says of its answer."""

    id: str
    method: str
    path: str
    status: int
    code: str | None = None  # the error's code, for an error
    json: Any = None
    content: bytes | None = None
    files: dict[str, tuple[str, bytes]] | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(AUTH))
    fields: tuple[str, ...] = ()  # top-level fields a success must have
    check: Callable[[Any], bool] | None = None  # more about a success's body


def _streamed(size: int) -> Iterator[bytes]:
    yield b'{"text": "'
    for _ in range(size // 65536):
        yield b"x" * 65536
    yield b'"}'


PREDICTION = ("latency_ms", "model")
WINE = {"alcohol": 13.2, "malic_acid": 1.8, "ash": 2.4, "alcalinity_of_ash": 16.0,
        "magnesium": 110.0, "total_phenols": 2.8, "flavanoids": 2.9,
        "nonflavanoid_phenols": 0.3, "proanthocyanins": 1.9, "color_intensity": 5.6,
        "hue": 1.0, "od280_od315": 3.1, "proline": 1100.0}
CASES = [
    Case("sentiment", "POST", "/api/predict/sentiment", 200, json={"text": "I love it"},
         fields=(*PREDICTION, "sentiment", "confidence", "score"),
         check=lambda b: b["sentiment"] == "positive" and b["model"] == "sentiment-v1"),
    Case("sentiment-empty", "POST", "/api/predict/sentiment", 422, "invalid_input",
         json={"text": ""}),
    Case("sentiment-extra-field", "POST", "/api/predict/sentiment", 422, "validation_error",
         json={"text": "hi", "nope": 1}),
    Case("malformed-json", "POST", "/api/predict/sentiment", 400, "malformed_json",
         content=b'{"text": ', headers={**AUTH, "content-type": "application/json"}),
    Case("wrong-media-type", "POST", "/api/predict/sentiment", 415,
         "unsupported_media_type", content=b"text=hi",
         headers={**AUTH, "content-type": "text/plain"}),
    Case("unknown-route", "POST", "/api/predict/nope", 404, "not_found", json={}),
    Case("wrong-method", "GET", "/api/predict/sentiment", 405, "method_not_allowed"),
    Case("no-key", "POST", "/api/predict/sentiment", 401, "unauthorized",
         json={"text": "hi"}, headers={}),
    Case("wrong-key", "POST", "/api/predict/sentiment", 401, "unauthorized",
         json={"text": "hi"}, headers={"x-api-key": "wrong"}),
    Case("bad-timeout-header", "POST", "/api/predict/sentiment", 400, "invalid_timeout",
         json={"text": "hi"}, headers={**AUTH, "x-request-timeout-ms": "soon"}),
    Case("body-too-large", "POST", "/api/predict/sentiment", 413, "payload_too_large",
         content=b"".join(_streamed(5 << 20)),  # the JSON limit is 4 MiB
         headers={**AUTH, "content-type": "application/json"}),
    Case("batch", "POST", "/api/predict/batch", 200, json={"texts": ["good", "awful"]},
         fields=("results", "count", "latency_ms", "model"),
         check=lambda b: b["count"] == 2 and b["results"][1]["sentiment"] == "negative"),
    Case("batch-bad-item", "POST", "/api/predict/batch", 422, "invalid_input",
         json={"texts": ["fine", ""]},
         check=lambda b: b["error"]["details"]["field"] == "texts[1]"),
    Case("batch-not-a-text-model", "POST", "/api/predict/batch", 422, "validation_error",
         json={"texts": ["fine"], "model": "image"}),
    Case("image-upload", "POST", "/api/predict/image", 200, files={"image": ("c.png", PNG)},
         fields=(*PREDICTION, "predictions"),
         check=lambda b: b["predictions"][0]["label"] == "espresso"),
    Case("image-base64", "POST", "/api/predict/image", 200,
         json={"image_base64": base64.b64encode(PNG).decode(), "top_k": 2},
         check=lambda b: len(b["predictions"]) == 2),
    Case("image-not-base64", "POST", "/api/predict/image", 422, "invalid_input",
         json={"image_base64": "!!!"}),
    Case("image-not-an-image", "POST", "/api/predict/image", 422, "invalid_input",
         json={"image_base64": base64.b64encode(b"plain text").decode()}),
    Case("image-url-metadata-service", "POST", "/api/predict/image", 422, "url_not_allowed",
         json={"image_url": "http://169.254.169.254/latest/meta-data/"}),
    Case("image-url-loopback", "POST", "/api/predict/image", 422, "url_not_allowed",
         json={"image_url": "http://127.0.0.1:1/x.png"}),
    Case("image-deadline", "POST", "/api/predict/image", 504, "deadline_exceeded",
         files={"image": ("c.png", PNG)}, headers={**AUTH, "x-request-timeout-ms": "1"}),
    Case("recommend", "POST", "/api/predict/recommend", 200,
         json={"user_id": "1", "limit": 3}, fields=(*PREDICTION, "recommendations"),
         check=lambda b: len(b["recommendations"]) == 3),
    Case("recommend-limit", "POST", "/api/predict/recommend", 422, "validation_error",
         json={"user_id": "1", "limit": 0}),
    Case("plugin", "POST", "/api/predict/wine", 200, json=WINE,
         fields=(*PREDICTION, "cultivar", "confidence", "probabilities")),
    Case("plugin-out-of-range", "POST", "/api/predict/wine", 422, "validation_error",
         json={**WINE, "alcohol": 40.0}),
    Case("health", "GET", "/health", 200, headers={},
         fields=("status", "uptime", "models", "ready", "draining"),
         check=lambda b: b["status"] == "healthy"
         and set(b["models"]) >= {"sentiment", "image", "recommender", "wine"}),
    Case("live", "GET", "/health/live", 200, headers={}),
    Case("ready", "GET", "/health/ready", 200, headers={}),
    Case("metrics", "GET", "/metrics", 200,
         fields=("uptime_s", "requests", "performance", "models", "engine")),
    Case("metrics-needs-key", "GET", "/metrics", 401, "unauthorized", headers={}),
    Case("models", "GET", "/api/models", 200, fields=("models",),
         check=lambda b: {m["state"] for m in b["models"]} == {"ready"}),
    Case("openapi", "GET", "/openapi.json", 200, headers={}, fields=("openapi", "paths"),
         check=lambda b: {"/api/predict/sentiment", "/api/predict/wine"} <= set(b["paths"])),
    Case("v2-ready", "GET", "/v2/models/sentiment/ready", 200),
    Case("v2-infer", "POST", "/v2/models/sentiment/infer", 200, json={"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["great"]}]},
         fields=("model_name", "outputs")),
]


def send(client: httpx.Client, case: Case) -> httpx.Response:
    return client.request(case.method, case.path, json=case.json, content=case.content,
                          files=case.files, headers=case.headers)


def problems(case: Case, response: httpx.Response) -> list[str]:
    """What in `response` breaks the contract `case` states (empty: nothing)."""
    found = []
    if response.status_code != case.status:
        found.append(f"status {response.status_code}, not {case.status}: "
                     f"{response.text[:300]}")
        return found
    if "application/json" not in response.headers.get("content-type", ""):
        return found if case.path.startswith("/docs") else [
            f"content-type {response.headers.get('content-type')}"]
    body = response.json()
    if response.status_code >= 400 and not case.path.startswith("/v2"):
        error = body.get("error", {})
        if error.get("code") != case.code:
            found.append(f"error code {error.get('code')!r}, not {case.code!r}")
        if not error.get("message") or "request_id" not in error:
            found.append(f"error without message or request id: {body}")
    missing = [f for f in case.fields if f not in body]
    if missing:
        found.append(f"fields missing: {missing}")
    if case.check is not None and not case.check(body):
        found.append(f"check failed on {str(body)[:300]}")
    if response.headers.get("x-request-id", "").count(",") or not response.headers.get(
            "x-request-id"):
        found.append(f"x-request-id {response.headers.get('x-request-id')!r}")
    return found


def comparable(case: Case, response: httpx.Response) -> Any:
    """The response as two servers must agree on it: status, error code, and a success's
    answer without timings and per-process figures."""
    if response.status_code >= 400 or case.path in ("/health", "/metrics", "/api/models",
                                                      "/openapi.json"):
        body = response.json() if response.headers.get("content-type", "").startswith(
            "application/json") else None
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        return response.status_code, code
    body = response.json()
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in ("latency_ms", "parameters", "id")}
    return response.status_code, body
