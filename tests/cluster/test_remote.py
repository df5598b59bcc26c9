"""The pieces of the Ray Serve application that run without a cluster: errors carried back
from replicas intact, Ray's own errors answered as the API's (503, 504, 500), the replica
class's model states and health check, and the deployments' options from settings."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.cluster import INGRESS_DEPLOYMENT, ModelServer, build_app, model_settings, plan
from api.config import ApiSettings, ClusterSettings
from api.remote import Description, Failure, RemoteEngine, RemoteRegistry
from api.service import Service
from ml.config import Settings
from ml.errors import ConfigError, InvalidInput, MLError, ModelUnavailable, Overloaded, UnknownModel
from ml.registry import ModelStatus
from tests.cluster.conftest import RAY_WARNINGS
from tests.cluster.fakes import SlowQuery, SlowResult

pytestmark = [RAY_WARNINGS]
FAKES = "slow=tests.cluster.fakes:build_slow,broken=tests.cluster.fakes:build_broken"


@pytest.mark.parametrize("error", [
    pytest.param(InvalidInput("value must be at most 1000", field="value", limit=1000),
                 id="invalid-input"),
    pytest.param(Overloaded("slow", retry_after_s=2.5), id="overloaded"),
    pytest.param(UnknownModel("nope", ["slow"]), id="unknown-model"),
])
def test_an_ml_error_crosses_from_a_replica_with_all_its_fields(error: MLError) -> None:
    back = pickle.loads(pickle.dumps(Failure.of(error))).error()
    assert type(back) is type(error)
    assert (back.message, back.details, back.code) == (error.message, error.details,
                                                       error.code)
    assert vars(back) == vars(error) and back.args == error.args


# -- Ray's errors, as the API answers them ----------------------------------------------------

class Response:
    """What a DeploymentHandle call returns: awaitable, cancellable, or `.result()`."""

    def __init__(self, outcome: Any, delay_s: float = 0.0) -> None:
        self.outcome, self.delay_s, self.cancelled = outcome, delay_s, False

    def __await__(self) -> Any:
        return self._answer().__await__()

    async def _answer(self) -> Any:
        await asyncio.sleep(self.delay_s)
        return self._result()

    def result(self, timeout_s: float | None = None) -> Any:
        if timeout_s is not None and self.delay_s > timeout_s:
            raise TimeoutError
        return self._result()

    def _result(self) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class Method:
    def __init__(self, handle: Handle, name: str) -> None:
        self.handle, self.name = handle, name

    def remote(self, *args: Any) -> Response:
        response = self.handle.answers[self.name](*args)
        self.handle.sent.append(response)
        return response


class Handle:
    """A DeploymentHandle of one model that answers as told (a test double)."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.sent: list[Response] = []

    def __getattr__(self, name: str) -> Method:
        return Method(self, name)


def served(query: SlowQuery, timeout: float) -> Response:
    from ml.engine import Served

    return Response(Served(SlowResult(2 * query.value), 0.5, 1.5, 3))


@pytest.fixture
def answers() -> dict[str, Any]:
    return {"predict": served}


@pytest.fixture
def app(answers: dict[str, Any]) -> Iterator[tuple[TestClient, Handle]]:
    settings = Settings.from_env({"ML_MODELS": FAKES, "ML_WARMUP": "0"})
    handle = Handle(**answers)
    registry = RemoteRegistry(settings, {"slow": handle})
    registry.describe("slow", Description(ModelStatus("slow", "ready", version="slow-v1")))
    service = Service(ApiSettings(), RemoteEngine(registry), owns_engine=True)
    with TestClient(create_app(service=service), raise_server_exceptions=False) as client:
        yield client, handle


def test_an_answer_keeps_its_timings(app: tuple[TestClient, Handle]) -> None:
    client, _ = app
    response = client.post("/api/predict/slow", json={"value": 21})
    assert response.json() == {"latency_ms": 2.0, "model": "slow-v1", "double": 42}
    assert response.headers["server-timing"] == \
        'queue;dur=0.500, compute;dur=1.500, batch;desc="3"'


def _raising(error: BaseException) -> Any:
    return lambda *args: Response(error)


def _failing(error: MLError) -> Any:
    return lambda *args: Response(Failure.of(error))


@pytest.mark.parametrize(("answers", "status", "code"), [
    pytest.param({"predict": _failing(InvalidInput("too big", field="value"))}, 422,
                 "invalid_input", id="ml-error-from-the-replica"),
    pytest.param({"predict": lambda *a: Response(__import__(
        "ray.exceptions").exceptions.ActorDiedError())}, 503, "model_unavailable",
                 id="replica-died"),
    pytest.param({"predict": lambda *a: Response(__import__(
        "ray.exceptions").exceptions.ActorUnavailableError("gone", b"\0" * 16))}, 503,
                 "model_unavailable", id="replica-unreachable"),
    pytest.param({"predict": lambda *a: Response(__import__(
        "ray.serve.exceptions").serve.exceptions.BackPressureError(
            num_queued_requests=64, max_queued_requests=64))}, 503, "overloaded",
                 id="queue-full"),
    pytest.param({"predict": lambda *a: Response(__import__(
        "ray.exceptions").exceptions.RayTaskError("predict", "tb", ValueError("bug")))},
                 500, "internal_error", id="model-bug"),
])
def test_rays_errors_are_the_apis_json_errors(app: tuple[TestClient, Handle], status: int,
                                              code: str) -> None:
    client, _ = app
    response = client.post("/api/predict/slow", json={"value": 1})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    if code == "overloaded":
        assert response.headers["retry-after"] == "1"
    if code == "model_unavailable":
        assert "retry shortly" in response.json()["error"]["message"]


@pytest.mark.parametrize("answers", [
    pytest.param({"predict": lambda *a: Response(None, delay_s=5.0)}, id="never")])
def test_past_its_deadline_a_request_is_504_and_cancelled(
        app: tuple[TestClient, Handle]) -> None:
    client, handle = app
    started = time.monotonic()
    response = client.post("/api/predict/slow", json={"value": 1},
                           headers={"x-request-timeout-ms": "200"})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 2.0
    assert handle.sent[-1].cancelled


def test_a_model_that_could_not_be_deployed_is_503_with_its_reason(
        app: tuple[TestClient, Handle]) -> None:
    client, _ = app
    response = client.post("/api/predict/broken", json={"value": 1})
    assert response.status_code == 503
    assert "not deployed" in response.json()["error"]["message"]
    states = client.get("/health").json()["models"]
    assert states["slow"] == "ready" and states["broken"] == "failed"


def test_a_model_without_running_replicas_is_loading_again() -> None:
    settings = Settings.from_env({"ML_MODELS": FAKES})
    registry = RemoteRegistry(settings, {"slow": Handle(
        describe=lambda: Response(Description(ModelStatus("slow", "ready"))))})
    assert registry.status("slow").state == "loading"
    registry.count({"slow": {"RUNNING": 2}})
    registry.refresh()
    assert registry.status("slow").state == "ready" and registry.load_count("slow") == 2
    registry.count({"slow": {"STARTING": 1}})  # every replica gone, one on its way
    assert registry.status("slow").state == "loading" and registry.loaded("slow") is None
    assert registry.replicas() == {"slow": 0}


# -- the replica class, in this process (its batched path needs Serve: test_cluster.py) ---

def replica(name: str, **environ: str) -> ModelServer:
    return ModelServer(name, {"ML_MODELS": FAKES, **environ})


def test_a_replica_describes_its_model() -> None:
    server = replica("slow", ML_SLOW_MAX_BATCH="3")
    description = server.describe()
    assert description.status.state == "ready"
    assert description.info == {"name": "slow", "version": "slow-v1"}
    assert description.limits is not None and description.limits.max_batch == 3
    server.check_health()


def test_a_replica_whose_model_cannot_build_answers_503_and_stays_healthy() -> None:
    server = replica("broken")
    status = server.describe().status
    assert status.state == "failed" and "weights file missing" in (status.reason or "")
    failure = asyncio.run(server.predict(SlowQuery(1), 1.0))
    assert isinstance(failure, Failure) and isinstance(failure.error(), ModelUnavailable)
    server.check_health()  # building again would fail again: no restart loop


def test_a_replica_answers_a_batch_and_refuses_bad_input() -> None:
    server = replica("slow")
    many = asyncio.run(server.predict_many([SlowQuery(1), SlowQuery(2)], 5.0))
    assert not isinstance(many, Failure)
    assert [s.result.double for s in many] == [2, 4]
    refused = asyncio.run(server.predict_many([SlowQuery(1), SlowQuery(5000)], 5.0))
    assert isinstance(refused, Failure)
    error = refused.error()
    assert isinstance(error, InvalidInput) and error.details["index"] == 1
    one = asyncio.run(server.predict(SlowQuery(5000), 5.0))  # refused before any batch
    assert isinstance(one, Failure) and isinstance(one.error(), InvalidInput)


def test_a_wedged_model_call_fails_the_health_check() -> None:
    server = replica("slow", ML_REQUEST_TIMEOUT_S="0.1")  # wedged after 0.3 s
    call = threading.Thread(target=lambda: asyncio.run(
        server.predict_many([SlowQuery(1, sleep_ms=1500)], 5.0)))
    call.start()
    time.sleep(0.6)
    with pytest.raises(ModelUnavailable, match="one model call has run"):
        server.check_health()
    call.join(10)
    server.check_health()  # finished: healthy again


# -- the deployments, from settings -----------------------------------------------------------

def test_each_model_gets_its_options_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("ML_")]:
        monkeypatch.delenv(key)
    planned = plan({"ML_MODELS": f"sentiment,image,{FAKES}", "ML_DEVICE": "cpu",
                    "ML_IMAGE_NUM_GPUS": "1", "ML_IMAGE_MAX_REPLICAS": "4",
                    "ML_SERVE_NUM_CPUS": "0.5", "ML_SLOW_MAX_BATCH": "32",
                    "ML_INGRESS_MIN_REPLICAS": "2", "ML_INGRESS_MAX_REPLICAS": "2",
                    "ML_SERVE_DOWNSCALE_DELAY_S": "60"})
    assert list(planned) == ["sentiment", "image", "slow", "broken", INGRESS_DEPLOYMENT]
    image = planned["image"]
    assert image["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 1.0}
    assert image["autoscaling_config"]["max_replicas"] == 4
    assert image["autoscaling_config"]["downscale_delay_s"] == 60
    assert planned["sentiment"]["ray_actor_options"] == {"num_cpus": 0.5}
    assert planned["sentiment"]["num_replicas"] == 1
    assert planned["sentiment"]["max_ongoing_requests"] >= 64  # its batches can fill
    assert planned["sentiment"]["max_queued_requests"] == 1024  # its queue bound
    assert planned["slow"]["max_ongoing_requests"] == 32  # ML_SLOW_MAX_BATCH
    assert planned[INGRESS_DEPLOYMENT]["num_replicas"] == 2


def test_the_application_builds_from_args_alone() -> None:
    app = build_app({"ML_MODELS": "sentiment", "ML_API_KEYS": "k"})
    assert type(app).__name__ == "Application"
    with pytest.raises(ConfigError, match="ML_"):
        build_app({"models": "sentiment"})
    with pytest.raises(ConfigError, match="ML_SERVE_MAX_REPLICAS"):
        ClusterSettings.from_env({"ML_SERVE_MIN_REPLICAS": "3"})
    # the API's secrets stay with the ingress; models get what models read
    assert model_settings({"ML_API_KEYS": "k", "ML_REDIS_URL": "redis://r",
                           "ML_SENTIMENT_MAX_BATCH": "8", "ML_IMAGE_NUM_GPUS": "1",
                           "ML_CACHE_DIR": "/c"}) == {"ML_SENTIMENT_MAX_BATCH": "8",
                                                      "ML_CACHE_DIR": "/c"}
