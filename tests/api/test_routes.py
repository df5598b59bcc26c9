"""Every endpoint and error path through Starlette's TestClient (lifespan on)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from starlette.testclient import TestClient

from api import schemas, wire
from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.contract import ModelBase
from ml.image import ImageResult
from ml.recommender import Recommendations
from ml.registry import Entry, Registry
from ml.sentiment import SentimentQuery, SentimentResult

JSON = {"content-type": "application/json"}


def answer(response: Any, result: type[Any]) -> Any:
    """The body decoded as the documented response of a model with result type `result`."""
    assert response.status_code == 200, response.text
    return msgspec.convert(response.json(), wire.response_type(result))


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert error["message"]
    assert isinstance(error["details"], dict)
    assert error["request_id"] == response.headers["x-request-id"]
    return error


# -- happy paths match the documented schemas -----------------------------------------------

def test_sentiment(client: TestClient) -> None:
    response = client.post("/api/predict/sentiment", json={"text": "I love this!"})
    body = answer(response, SentimentResult)
    assert body.sentiment == "positive"
    assert body.model == "sentiment-v1"
    assert body.latency_ms > 0
    assert body.probabilities is None and body.terms is None


def test_sentiment_detailed(client: TestClient) -> None:
    response = client.post("/api/predict/sentiment",
                           json={"text": "I love this!", "options": {"detailed": True}})
    body = answer(response, SentimentResult)
    assert body.probabilities is not None
    assert body.terms and body.terms[0].term


def test_batch_is_ordered_one_result_per_text(client: TestClient) -> None:
    texts = ["wonderful, thank you", "awful, never again", "wonderful, thank you"] * 400
    response = client.post("/api/predict/batch", json={"texts": texts, "model": "sentiment"})
    assert response.status_code == 200, response.text
    body = msgspec.convert(response.json(), wire.batch_response_type(SentimentResult))
    assert body.count == len(texts) == len(body.results)
    assert [r.sentiment for r in body.results[:3]] == ["positive", "negative", "positive"]


@pytest.mark.parametrize("text", [
    pytest.param("\u200b\u200d\ufeff", id="format-characters"),
    pytest.param("\x00\x07\x1b", id="control-characters"),
    pytest.param(" \t\n\u3000", id="whitespace")])
def test_text_with_nothing_printable_is_refused_naming_the_field(client: TestClient,
                                                                  text: str) -> None:
    one = assert_error(client.post("/api/predict/sentiment", json={"text": text}), 422,
                       "invalid_input")
    assert one["details"]["field"] == "text" and one["request_id"]
    batch = assert_error(client.post("/api/predict/batch", json={"texts": ["fine", text]}),
                         422, "invalid_input")
    assert batch["details"]["field"] == "texts[1]"


def test_image_base64(client: TestClient, coffee_b64: str) -> None:
    response = client.post("/api/predict/image", json={"image_base64": coffee_b64, "top_k": 3})
    body = answer(response, ImageResult)
    assert body.predictions[0].label == "espresso"
    assert len(body.predictions) == 3
    assert body.model == "image-classifier-v1"


def test_image_data_url(client: TestClient, coffee_b64: str) -> None:
    response = client.post("/api/predict/image",
                           json={"image_base64": f"data:image/jpeg;base64,{coffee_b64}"})
    assert response.json()["predictions"][0]["label"] == "espresso"


def test_image_multipart(client: TestClient, coffee_jpeg: bytes) -> None:
    response = client.post("/api/predict/image", files={"image": ("c.jpg", coffee_jpeg)},
                           data={"top_k": "2"})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2


def test_recommend(client: TestClient, recommender) -> None:  # type: ignore[no-untyped-def]
    user = recommender.known_users()[3]
    response = client.post("/api/predict/recommend", json={
        "user_id": user, "context": {"category": "Produce"}, "limit": 5})
    body = answer(response, Recommendations)
    assert body.strategy == "als" and body.user_id == user
    assert len(body.recommendations) == 5
    assert {r.department for r in body.recommendations} == {"PRODUCE"}


def test_recommend_unknown_user_falls_back(client: TestClient) -> None:
    body = client.post("/api/predict/recommend", json={"user_id": "nobody-here"}).json()
    assert body["strategy"] == "popular"
    assert len(body["recommendations"]) == 10


def test_models(client: TestClient) -> None:
    body = msgspec.convert(client.get("/api/models").json(), schemas.ModelsResponse)
    assert {m.name: m.state for m in body.models} == {
        "sentiment": "ready", "image": "ready", "recommender": "ready", "wine": "ready"}
    routes = {m.name: m.routes for m in body.models}
    assert routes["recommender"] == ["/api/predict/recommender", "/api/predict/recommend"]
    assert {m.name: m.origin for m in body.models}["wine"] == "plugin realtime-ml-wine"
    assert all(m.info and m.info["evaluation"] for m in body.models)
    assert all(m.load_seconds for m in body.models)


def test_health_and_probes(client: TestClient) -> None:
    body = msgspec.convert(client.get("/health").json(), schemas.HealthResponse)
    assert body.status == "healthy" and body.ready
    assert body.memory["rss_mb"] > 100
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health/ready").status_code == 200


def test_metrics_json_and_prometheus(client: TestClient) -> None:
    client.post("/api/predict/sentiment", json={"text": "good"})
    client.post("/api/predict/sentiment", json={"text": ""})
    body = msgspec.convert(client.get("/metrics").json(), schemas.MetricsResponse)
    assert body.requests["total"] >= 2
    assert body.requests["by_status"]["422"] >= 1
    assert 0 < body.requests["success_rate"] < 1
    assert set(body.performance) >= {"avg_ms", "p95_ms", "p99_ms"}
    assert body.models["sentiment"]["calls"] >= 1
    for response in (client.get("/metrics/prometheus"),
                     client.get("/metrics", headers={"accept": "text/plain"})):
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        for name in ("http_requests_total", "http_request_duration_seconds_bucket",
                     "http_requests_in_flight", "model_load_seconds",
                     "model_inference_seconds", "process_resident_memory_bytes",
                     "process_cpu_seconds_total", "python_gc_objects_collected_total",
                     'status_class="4xx"'):
            assert name in text, name


def test_openapi_is_valid_and_lists_every_endpoint(client: TestClient) -> None:
    from openapi_spec_validator import validate

    spec = client.get("/openapi.json").json()
    validate(spec)
    assert set(spec["paths"]) >= {"/api/predict/sentiment", "/api/predict/batch",
                                  "/api/predict/image", "/api/predict/recommend", "/health",
                                  "/health/live", "/health/ready", "/metrics", "/api/models"}
    image = spec["paths"]["/api/predict/image"]["post"]["requestBody"]["content"]
    assert set(image) == {"application/json", "multipart/form-data"}


def test_openapi_declares_security_only_when_keys_are_set(make_client) -> None:  # type: ignore[no-untyped-def]
    open_spec = make_client(rate_limit_per_second=0.0).get("/openapi.json").json()
    assert not [p for p, ops in open_spec["paths"].items()
                for op in ops.values() if op.get("security")]
    keyed = make_client(api_keys=("k",), rate_limit_per_second=0.0)
    spec = keyed.get("/openapi.json", headers={"x-api-key": "k"}).json()
    assert spec["components"]["securitySchemes"]
    secured = {p for p, ops in spec["paths"].items() for op in ops.values() if op.get("security")}
    assert {"/api/predict/sentiment", "/api/predict/image", "/api/predict/recommend",
            "/api/predict/batch", "/api/models", "/metrics", "/metrics/prometheus"} <= secured
    assert not secured & {"/health", "/health/live", "/health/ready"}


def test_request_bodies_have_no_top_level_union(client: TestClient) -> None:
    """A top-level oneOf/anyOf turns a body into `Any` in common client generators."""
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for op in ops.values():
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                schema = content["schema"]
                if "$ref" in schema:
                    schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
                assert not {"oneOf", "anyOf"} & set(schema), (path, media)
                assert schema.get("type") == "object", (path, media)


def test_docs_page_works_offline(client: TestClient) -> None:
    """Swagger UI from the installed package: every file the page names is served here, and
    its policy lets the browser load nothing from anywhere else."""
    import re

    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "http://" not in page.text and "https://" not in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy
    for path in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        asset = client.get(path)
        assert asset.status_code == 200 and len(asset.content) > 20, path
    assert '"/openapi.json"' in client.get("/docs/init.js").text
    assert_error(client.get("/docs/..%2F..%2Fetc%2Fpasswd"), 404, "not_found")
    assert_error(client.get("/docs/index.j2"), 404, "not_found")  # only what the page uses


# -- request ids and headers ----------------------------------------------------------------

def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    given = client.get("/health/live", headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = client.get("/health/live", headers={"x-request-id": "bad id\twith spaces"})
    assert len(generated.headers["x-request-id"]) == 32


def test_security_headers(client: TestClient) -> None:
    headers = client.post("/api/predict/sentiment", json={"text": "x"}).headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"


# -- bad input: status and code, table-driven -----------------------------------------------

BAD: Sequence[Any] = [
    pytest.param("POST", "/api/predict/sentiment", b"{bad json", JSON, 400, "malformed_json",
                 id="malformed-json"),
    pytest.param("POST", "/api/predict/sentiment", b'{"text": "abc"', JSON, 400,
                 "malformed_json", id="truncated-json"),
    pytest.param("POST", "/api/predict/sentiment", b"", JSON, 400, "malformed_json",
                 id="empty-body"),
    pytest.param("POST", "/api/predict/sentiment", b'{"text": "hi"}',
                 {"content-type": "text/plain"}, 415, "unsupported_media_type",
                 id="text-plain"),
    pytest.param("POST", "/api/predict/sentiment", b'{"text": "hi"}', {}, 415,
                 "unsupported_media_type", id="no-content-type"),
    pytest.param("POST", "/api/predict/sentiment", b'{"text": 5}', JSON, 422,
                 "validation_error", id="text-number"),
    pytest.param("POST", "/api/predict/sentiment", b'{"text": null}', JSON, 422,
                 "validation_error", id="text-null"),
    pytest.param("POST", "/api/predict/sentiment", b'{}', JSON, 422, "validation_error",
                 id="text-missing"),
    pytest.param("POST", "/api/predict/sentiment", b'[]', JSON, 422, "validation_error",
                 id="array-body"),
    pytest.param("POST", "/api/predict/sentiment", b'{"text": "hi", "extra": 1}', JSON, 422,
                 "validation_error", id="extra-field"),
    pytest.param("POST", "/api/predict/sentiment",
                 b'{"text": "hi", "options": {"detailed": "yes"}}', JSON, 422,
                 "validation_error", id="detailed-string"),
    pytest.param("POST", "/api/predict/sentiment", b'{"text": "   "}', JSON, 422,
                 "invalid_input", id="whitespace"),
    pytest.param("POST", "/api/predict/sentiment", b'{"text": "' + b"x" * 6000 + b'"}', JSON,
                 422, "invalid_input", id="too-long"),
    pytest.param("POST", "/api/predict/sentiment", b'{"text": "\xff\xfe"}', JSON, 400,
                 "malformed_json", id="invalid-utf8"),
    pytest.param("POST", "/api/predict/batch", b'{"texts": []}', JSON, 422,
                 "validation_error", id="batch-empty"),
    pytest.param("POST", "/api/predict/batch", b'{"texts": ["a", 1]}', JSON, 422,
                 "validation_error", id="batch-number"),
    pytest.param("POST", "/api/predict/batch", b'{"texts": ["a", " "]}', JSON, 422,
                 "invalid_input", id="batch-blank-item"),
    pytest.param("POST", "/api/predict/batch", b'{"texts": ["a"], "model": "image"}', JSON,
                 422, "validation_error", id="batch-wrong-model"),
    pytest.param("POST", "/api/predict/batch",
                 b'{"texts": [' + b",".join([b'"a"'] * 2001) + b"]}", JSON, 422,
                 "invalid_input", id="batch-over-max"),
    pytest.param("POST", "/api/predict/image", b'{"top_k": 3}', JSON, 422,
                 "validation_error", id="image-no-source"),
    pytest.param("POST", "/api/predict/image",
                 b'{"image_base64": "aGk=", "image_url": "http://x"}', JSON, 422,
                 "validation_error", id="image-two-sources"),
    pytest.param("POST", "/api/predict/image", b'{"image_base64": "%%%not base64%%%"}', JSON,
                 422, "invalid_input", id="garbage-base64"),
    pytest.param("POST", "/api/predict/image", b'{"image_base64": "aGVsbG8gd29ybGQ="}', JSON,
                 422, "invalid_input", id="base64-not-image"),
    pytest.param("POST", "/api/predict/image", b'{"image_base64": "aGk=", "top_k": 0}', JSON,
                 422, "validation_error", id="top-k-zero"),
    pytest.param("POST", "/api/predict/image", b'{"image_base64": "aGk=", "top_k": 99}', JSON,
                 422, "validation_error", id="top-k-huge"),
    pytest.param("POST", "/api/predict/image", b'{"image_url": "file:///etc/passwd"}', JSON,
                 422, "url_not_allowed", id="file-url"),
    pytest.param("POST", "/api/predict/recommend", b'{"user_id": 5}', JSON, 422,
                 "validation_error", id="user-id-number"),
    pytest.param("POST", "/api/predict/recommend", b'{"user_id": ""}', JSON, 422,
                 "validation_error", id="user-id-empty"),
    pytest.param("POST", "/api/predict/recommend", b'{"user_id": "1", "limit": -1}', JSON,
                 422, "validation_error", id="limit-negative"),
    pytest.param("POST", "/api/predict/recommend", b'{"user_id": "1", "limit": 100000}', JSON,
                 422, "validation_error", id="limit-huge"),
    pytest.param("POST", "/api/predict/recommend",
                 b'{"user_id": "1", "context": {"category": "spaceships"}}', JSON, 422,
                 "invalid_input", id="unknown-category"),
    pytest.param("GET", "/api/predict/sentiment", None, {}, 405, "method_not_allowed",
                 id="wrong-method"),
    pytest.param("POST", "/health", None, {}, 405, "method_not_allowed", id="post-health"),
    pytest.param("GET", "/api/nope", None, {}, 404, "not_found", id="unknown-route"),
    pytest.param("GET", "/api/predict/sentiment/extra", None, {}, 404, "not_found",
                 id="unknown-subroute"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "code"), BAD)
def test_bad_requests(client: TestClient, method: str, path: str, body: bytes | None,
                      headers: dict[str, str], status: int, code: str) -> None:
    response = client.request(method, path, content=body, headers=headers)
    error = assert_error(response, status, code)
    if status == 422 and code == "validation_error":
        assert error["details"]["errors"][0]["field"]


def test_validation_error_names_the_field_path(client: TestClient) -> None:
    response = client.post("/api/predict/sentiment",
                           json={"text": "hi", "options": {"detailed": 1}})
    error = assert_error(response, 422, "validation_error")
    assert error["details"]["errors"][0]["field"] == "options.detailed"


def test_multipart_without_or_with_many_files(client: TestClient, coffee_jpeg: bytes) -> None:
    none = client.post("/api/predict/image", files={"other": ("x.txt", b"hi")})
    assert_error(none, 422, "invalid_input")
    many = client.post("/api/predict/image", files=[("image", ("a.jpg", coffee_jpeg)),
                                                    ("image", ("b.jpg", coffee_jpeg))])
    assert_error(many, 400, "bad_multipart")


# -- limits, auth, rate limiting -------------------------------------------------------------

def test_body_limit_by_content_length(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_json_body_bytes=2048)
    response = client.post("/api/predict/sentiment", json={"text": "x" * 5000})
    error = assert_error(response, 413, "payload_too_large")
    assert error["details"]["limit"] == 2048


def test_each_route_has_its_own_body_limit(make_client, coffee_b64: str) -> None:  # type: ignore[no-untyped-def]
    """JSON text routes stop at ML_MAX_JSON_BODY_BYTES; an image may be larger, up to
    ML_MAX_BODY_BYTES."""
    client = make_client(max_json_body_bytes=4096, max_body_bytes=len(coffee_b64) + 1024)
    image = client.post("/api/predict/image", json={"image_base64": coffee_b64})
    assert image.status_code == 200, image.text
    big_batch = client.post("/api/predict/batch", json={"texts": ["fine"] * 2000})
    assert assert_error(big_batch, 413, "payload_too_large")["details"]["limit"] == 4096
    too_big = client.post("/api/predict/image", json={"image_base64": coffee_b64 * 2})
    assert_error(too_big, 413, "payload_too_large")


def test_body_limit_while_streaming_chunked(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(max_json_body_bytes=2048)

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"text": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    response = client.post("/api/predict/sentiment", content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


AUTH_CASES = [
    pytest.param({}, 401, id="missing"),
    pytest.param({"authorization": ""}, 401, id="empty-header"),
    pytest.param({"authorization": "Bearer "}, 401, id="empty-bearer"),
    pytest.param({"authorization": "Bearer wrong"}, 401, id="wrong"),
    pytest.param({"authorization": "Basic s3cret-key"}, 401, id="wrong-scheme"),
    pytest.param({"authorization": "Bearer s3cret-ke"}, 401, id="near-miss-short"),
    pytest.param({"authorization": "Bearer s3cret-keyy"}, 401, id="near-miss-long"),
    pytest.param({"x-api-key": "S3CRET-KEY"}, 401, id="wrong-case"),
    pytest.param({"authorization": "Bearer s3cret-key"}, 200, id="bearer"),
    pytest.param({"authorization": "bearer s3cret-key"}, 200, id="bearer-lowercase"),
    pytest.param({"x-api-key": "other-key"}, 200, id="x-api-key"),
]


@pytest.mark.parametrize(("headers", "status"), AUTH_CASES)
def test_api_keys(make_client, headers: dict[str, str], status: int) -> None:  # type: ignore[no-untyped-def]
    client = make_client(api_keys=("s3cret-key", "other-key"))
    response = client.post("/api/predict/sentiment", json={"text": "hi"}, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


def test_auth_keeps_probes_open_and_refuses_query_keys(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(api_keys=("s3cret-key",))
    assert client.get("/health/live").status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.post("/api/predict/sentiment?api_key=s3cret-key",
                       json={"text": "hi"}).status_code == 401


def test_keys_never_reach_the_logs(make_client, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    client = make_client(api_keys=("s3cret-key",))
    with caplog.at_level("DEBUG"):
        client.post("/api/predict/sentiment", json={"text": "hi"},
                    headers={"authorization": "Bearer s3cret-key"})
        client.post("/api/predict/sentiment", json={"text": "hi"},
                    headers={"authorization": "Bearer s3cret-kez"})
    assert "s3cret" not in caplog.text
    assert "s3cret" not in repr(client.app.state.service.settings)


def test_rate_limit_then_recovery(make_client) -> None:  # type: ignore[no-untyped-def]
    # one token a second: the five requests have a whole second before a token comes back
    client = make_client(rate_limit_per_second=1.0, rate_limit_burst=3)
    statuses = [client.post("/api/predict/sentiment", json={"text": "hi"}) for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    assert statuses[0].headers["x-ratelimit-remaining"] == "2"
    limited = statuses[3]
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    time.sleep(1.1)
    assert client.post("/api/predict/sentiment", json={"text": "hi"}).status_code == 200
    assert client.get("/health/live").status_code == 200  # probes are never limited


def test_rate_limit_ignores_spoofed_forwarded_for(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(rate_limit_per_second=1.0, rate_limit_burst=2)
    codes = [client.post("/api/predict/sentiment", json={"text": "hi"},
                         headers={"x-forwarded-for": f"203.0.113.{i}"}).status_code
             for i in range(4)]
    assert codes.count(429) == 2


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    pytest.param("10.0.0.5", "203.0.113.7", "ip:203.0.113.7", id="trusted-proxy"),
    pytest.param("10.0.0.5", "198.51.100.1, 203.0.113.7, 10.0.0.9", "ip:203.0.113.7",
                 id="chain-through-trusted-hops"),
    pytest.param("192.0.2.1", "203.0.113.7", "ip:192.0.2.1", id="untrusted-peer-spoofs"),
    pytest.param("10.0.0.5", "", "ip:10.0.0.5", id="trusted-without-header"),
    pytest.param("10.0.0.5", "not-an-ip", "ip:not-an-ip", id="garbage-hop"),
])
def test_forwarded_for_is_believed_only_from_trusted_proxies(peer: str, forwarded: str,
                                                             expected: str) -> None:
    from api.middleware import RateLimit
    from api.ratelimit import client_address, networks

    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"type": "http", "client": (peer, 1234), "headers": headers, "state": {}}
    client = client_address(scope, networks(("10.0.0.0/8",)))
    assert RateLimit.client_of(scope, client) == expected


# -- failures ---------------------------------------------------------------------------------

class Boom(ModelBase[SentimentQuery, tuple[str, bool], SentimentResult]):
    """A sentiment model that accepts its input, then raises while predicting."""

    name = "sentiment"
    version = "boom-v1"
    Query = SentimentQuery
    Result = SentimentResult

    def prepare(self, query: SentimentQuery) -> tuple[str, bool]:
        return query.text, query.options.detailed

    def predict(self, items):  # type: ignore[no-untyped-def]
        raise RuntimeError("model exploded")

    def examples(self) -> list[SentimentQuery]:
        return [SentimentQuery("hi")]

    def info(self):  # type: ignore[no-untyped-def]
        return {"name": self.name, "version": self.version, "evaluation": {}}

    def warmup(self) -> None:
        pass


def broken_image(settings: Settings, store: ArtifactStore) -> Any:
    raise FileNotFoundError("weights file is missing")


def test_model_bug_is_a_500_with_request_id_and_server_keeps_serving(
    make_client, warm_registry: Registry, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    registry = Registry(warm_registry.settings, entries={
        "sentiment": Entry.of(Boom()),
        "recommender": Entry.of(warm_registry.get("recommender"), aliases=("recommend",))})
    client = make_client(registry=registry)
    response = client.post("/api/predict/sentiment", json={"text": "hi"},
                           headers={"x-request-id": "trace-me"})
    error = assert_error(response, 500, "internal_error")
    assert error["request_id"] == "trace-me"
    assert "exploded" not in response.text and "Traceback" not in response.text
    assert "trace-me" in caplog.text
    assert client.post("/api/predict/recommend", json={"user_id": "1"}).status_code == 200


def test_failed_model_degrades_health_and_others_keep_serving(
    make_client, warm_registry: Registry  # type: ignore[no-untyped-def]
) -> None:
    registry = Registry(warm_registry.settings, entries={
        "sentiment": Entry.of(warm_registry.get("sentiment")),
        "image": Entry(broken_image, cls=type(warm_registry.get("image")))})
    client = make_client(registry=registry)
    health = client.get("/health").json()
    assert health["status"] == "degraded"
    assert health["models"] == {"sentiment": "ready", "image": "failed"}
    error = assert_error(client.post("/api/predict/image", json={"image_base64": "aGk="}),
                         503, "model_unavailable")
    assert "weights file is missing" in error["message"]
    assert client.post("/api/predict/sentiment", json={"text": "hi"}).status_code == 200
    assert client.get("/health/ready").status_code == 200
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert models["image"]["reason"] == "FileNotFoundError: weights file is missing"


def test_not_ready_until_warm(make_client, warm_registry: Registry) -> None:  # type: ignore[no-untyped-def]
    gate = __import__("threading").Event()

    def slow(settings: Settings, store: ArtifactStore) -> Any:
        gate.wait(10)
        return warm_registry.get("sentiment")

    client = make_client(registry=Registry(warm_registry.settings, entries={
        "sentiment": Entry(slow, cls=type(warm_registry.get("sentiment")))}), wait=False)
    not_ready = client.get("/health/ready")
    assert not_ready.status_code == 503 and not_ready.json()["status"] == "warming up"
    assert client.get("/health/live").status_code == 200
    assert client.get("/health").json()["status"] == "degraded"
    gate.set()
    deadline = time.monotonic() + 10
    while client.get("/health/ready").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get("/health/ready").status_code == 200


def test_deadline_answers_504(make_client, warm_registry: Registry) -> None:  # type: ignore[no-untyped-def]
    release = __import__("threading").Event()

    class Hang(Boom):
        def predict(self, items):  # type: ignore[no-untyped-def]
            release.wait(30)

    registry = Registry(warm_registry.settings, entries={
        "sentiment": Entry.of(Hang()),
        "recommender": Entry.of(warm_registry.get("recommender"), aliases=("recommend",))})
    client = make_client(registry=registry, request_timeout_s=0.2, warmup=False)
    try:
        assert_error(client.post("/api/predict/sentiment", json={"text": "hi"}), 504,
                     "deadline_exceeded")
        # the hanging model holds its own batcher only: the server and other models answer,
        # all while the model still hangs (nothing below waited for it)
        assert client.post("/api/predict/recommend", json={"user_id": "1"}).status_code == 200
        assert client.get("/health/live").status_code == 200
        assert not release.is_set()
    finally:
        release.set()


def test_readiness_turns_503_when_a_shutdown_signal_arrives(client: TestClient) -> None:
    service = client.app.state.service
    assert client.get("/health/ready").status_code == 200
    service.draining = True  # what the SIGTERM hook sets before the server drains
    response = client.get("/health/ready")
    assert response.status_code == 503 and response.json()["status"] == "draining"
    assert client.get("/health").json()["draining"] is True
    assert client.get("/health/live").status_code == 200


def test_signal_hook_sets_draining_and_chains_to_the_previous_handler(
    warm_registry: Registry,
) -> None:
    import signal

    from api.service import Service

    seen: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        service = Service.over(warm_registry)
        restore = service.drain_on_signals()
        signal.raise_signal(signal.SIGTERM)
        assert service.draining and seen == [signal.SIGTERM]
        restore()
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM, signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, original)


def test_cors_origins_come_from_settings(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(cors_origins=("https://app.example",))
    preflight = client.options("/api/predict/sentiment", headers={
        "origin": "https://app.example", "access-control-request-method": "POST",
        "access-control-request-headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    other = client.post("/api/predict/sentiment", json={"text": "hi"},
                        headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
