"""Property-based fuzzing of the whole API from its own /openapi.json (schemathesis):
no 5xx, and every response matches the schema. Bounded: a fixed number of examples per
operation, derandomised so CI runs are repeatable. image_url fetches go to a mock
transport: the fuzzer's random URLs never leave the process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.testclient import TestClient

from api.app import create_app
from api.config import ApiSettings
from api.fetch import ImageFetcher
from api.service import Service
from benchmarks.reliability import FUZZ_EXAMPLES
from ml.engine import Engine
from ml.registry import Registry

EXAMPLES = FUZZ_EXAMPLES
# Open Inference Protocol requests: a tensor's data must match its shape and datatype, which
# JSON Schema cannot say, so most schema-valid bodies rightly get a 400
CONTENT_CHECKED = {"POST /api/predict/image", "POST /api/predict/recommend",
                   "POST /v2/models/sentiment/infer", "POST /v2/models/image/infer"}


async def public_resolver(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]  # a public address; the mock transport answers for it


@pytest.fixture(scope="module")
def app(warm_registry: Registry) -> Iterator[Any]:
    engine = Engine(warm_registry, settings=warm_registry.settings.replace(cache_entries=0))
    fetcher = ImageFetcher(max_bytes=engine.settings.max_image_bytes, timeout_s=1.0,
                           max_redirects=1, resolver=public_resolver,
                           transport=httpx.MockTransport(lambda request: httpx.Response(404)))
    service = Service(ApiSettings(rate_limit_per_second=0.0), engine, owns_engine=True,
                      fetcher=fetcher)
    app = create_app(service=service)
    with TestClient(app):  # runs the lifespan once: warm-up, then ready
        assert service.wait_ready(60)
        yield without_lifespan(app)


def without_lifespan(app: Any) -> Any:
    """The app for schemathesis, which would otherwise run (and end) the app's lifespan
    itself: lifespan events are acknowledged here, everything else goes to the app."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped


def operations(app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_is_fuzzed(app: Any) -> None:
    found = {f"{op.method.upper()} {op.path}" for op in operations(app)}
    assert {"POST /api/predict/sentiment", "POST /api/predict/batch",
            "POST /api/predict/image", "POST /api/predict/recommend", "GET /health",
            "GET /metrics"} <= found, found


@pytest.mark.parametrize("name", ["POST /api/predict/sentiment", "POST /api/predict/batch",
                                  "POST /api/predict/image", "POST /api/predict/recommend",
                                  "GET /api/models", "GET /health", "GET /health/live",
                                  "GET /health/ready", "GET /metrics", "GET /v2",
                                  "GET /v2/health/ready", "GET /v2/models/sentiment",
                                  "GET /v2/models/recommender/ready",
                                  "POST /v2/models/sentiment/infer",
                                  "POST /v2/models/image/infer"])
def test_api_never_fails_and_matches_its_schema(app: Any, name: str) -> None:
    operation = next(op for op in operations(app) if f"{op.method.upper()} {op.path}" == name)

    # Whether an image decodes, or a department exists, is beyond JSON Schema: there a
    # schema-valid request may rightly get a 422, so "valid data is accepted" is not checked.
    excluded = [positive_data_acceptance] if name in CONTENT_CHECKED else []

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        # A client may ask for a deadline shorter than the work takes: its documented answer
        # is 504 deadline_exceeded. Any other 5xx fails.
        deadline = {k.lower(): v for k, v in (case.headers or {}).items()}.get(
            "x-request-timeout-ms")
        short = deadline is not None and str(deadline).isdigit() and int(deadline) < 1000
        response = case.call_and_validate(
            excluded_checks=[*excluded, *([not_a_server_error] if short else [])])
        assert response.status_code < 500 or (short and response.status_code == 504), \
            response.text

    check()
