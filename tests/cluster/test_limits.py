"""Rate limits shared through Redis (api.ratelimit.SharedBuckets, ML_REDIS_URL): counted
once across processes, on Redis's clock, and what happens when Redis is down: fail open
(the default: each process's own buckets) or fail closed (503), then shared again."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.config import ApiSettings
from api.ratelimit import SharedBuckets, TokenBuckets, shared_buckets
from api.service import Service
from benchmarks.services import free_port, running
from ml.config import Settings
from ml.engine import Engine
from ml.errors import ConfigError
from ml.registry import Registry
from tests.cluster.conftest import RedisServer


@pytest.fixture
def key() -> str:
    return f"client-{uuid.uuid4().hex}"  # a fresh bucket in the module's Redis


def closed_port_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def test_the_default_is_each_process_with_its_own_buckets() -> None:
    buckets = shared_buckets(ApiSettings())
    assert type(buckets) is TokenBuckets  # the in-memory hot path, untouched


def test_settings_refuse_a_mode_or_url_they_do_not_know() -> None:
    with pytest.raises(ConfigError, match="ML_REDIS_FAILURE_MODE"):
        ApiSettings.from_env({"ML_REDIS_FAILURE_MODE": "sometimes"})
    with pytest.raises(ConfigError, match="ML_REDIS_URL") as refused:
        ApiSettings.from_env({"ML_REDIS_URL": "http://user:secret@cache:6379"})
    assert "secret" not in str(refused.value)  # a URL may carry a password
    rows = {row["env"]: row for row in ApiSettings.describe()}
    assert rows["ML_REDIS_URL"]["default"] == "(none)"
    assert rows["ML_REDIS_FAILURE_MODE"]["default"] == "open"


def test_two_processes_share_one_bucket_per_key(redis_server: RedisServer, key: str) -> None:
    """Two SharedBuckets are what two API processes (or ingress replicas) hold."""
    first, second = (SharedBuckets(0.001, 5, redis_server.url) for _ in range(2))
    allowed = [b.take(key) == 0.0 for b in (first, second) * 6]
    assert allowed == [True] * 5 + [False] * 7  # five in all, not five each
    assert first.remaining(key) == second.remaining(key) == 0
    assert second.take(key) > 100  # seconds to wait at 0.001/s
    assert first.take(f"{key}-other") == 0.0  # other keys have their own buckets
    assert first.shared and second.shared


def test_tokens_come_back_at_the_rate_on_redis_clock(redis_server: RedisServer,
                                                     key: str) -> None:
    buckets = SharedBuckets(20.0, 1, redis_server.url)
    assert buckets.take(key) == 0.0
    wait = buckets.take(key)
    assert 0 < wait <= 0.05
    time.sleep(wait + 0.02)
    assert buckets.take(key) == 0.0


def test_many_threads_spend_exactly_the_burst(redis_server: RedisServer, key: str) -> None:
    buckets = [SharedBuckets(0.001, 40, redis_server.url) for _ in range(4)]
    allowed: list[bool] = []

    def spend(mine: SharedBuckets) -> None:
        for _ in range(25):
            allowed.append(mine.take(key) == 0.0)

    threads = [threading.Thread(target=spend, args=(b,)) for b in buckets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(allowed) == 100 and sum(allowed) == 40  # the script is atomic


def test_fail_open_limits_per_process_then_shares_again(tmp_path_factory: pytest.TempPathFactory,
                                                        key: str) -> None:
    redis = RedisServer(tmp_path_factory.mktemp("redis-outage"))
    redis.start()
    try:
        buckets = SharedBuckets(0.001, 3, redis.url, retry_s=0.5)
        assert [buckets.take(key) == 0.0 for _ in range(4)] == [True, True, True, False]
        redis.stop()
        # Redis gone: this process's own bucket (full) decides, and is spent in turn
        assert [buckets.take(key) == 0.0 for _ in range(4)] == [True, True, True, False]
        assert not buckets.shared
        redis.start()
        time.sleep(0.6)  # the retry pause
        assert buckets.take(key) == 0.0  # Redis again (a fresh one: a full bucket)
        assert buckets.shared
        assert buckets.remaining(key) == 2
    finally:
        redis.stop()


@pytest.fixture
def silent_redis() -> Iterator[tuple[str, list[socket.socket]]]:
    """A port that accepts connections and never answers (a hung Redis)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0", accepted
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def test_a_hung_redis_costs_one_timeout_per_retry_pause(
        silent_redis: tuple[str, list[socket.socket]]) -> None:
    url, accepted = silent_redis
    buckets = SharedBuckets(0.001, 2, url, timeout_s=0.1, retry_s=30.0)
    started = time.perf_counter()
    assert buckets.take("k") == 0.0  # failed open after one timeout
    first = time.perf_counter() - started
    assert first < 1.0
    started = time.perf_counter()
    outcomes = [buckets.take("k") == 0.0 for _ in range(50)]
    assert time.perf_counter() - started < 0.05  # Redis is not asked again in the pause
    assert outcomes[:1] == [True] and not any(outcomes[1:])
    assert len(accepted) == 1


def service_with(registry: Registry, **changes: object) -> Service:
    settings = ApiSettings().replace(**changes)
    return Service(settings, Engine(registry), owns_engine=True,
                   rate_limits=shared_buckets(settings))


@pytest.mark.parametrize(("mode", "status", "code"), [
    pytest.param("open", 200, None, id="open"),
    pytest.param("closed", 503, "rate_limit_unavailable", id="closed"),
])
def test_with_redis_down_the_api_fails_as_configured(registry: Registry, mode: str,
                                                     status: int, code: str | None) -> None:
    service = service_with(registry, redis_url=closed_port_url(),
                           redis_failure_mode=mode, rate_limit_per_second=1.0,
                           rate_limit_burst=2)
    with TestClient(create_app(service=service), raise_server_exceptions=False) as client:
        assert service.wait_ready(60)
        responses = [client.post("/api/predict/sentiment", json={"text": "fine"})
                     for _ in range(3)]
        assert [r.status_code for r in responses] == (
            [200, 200, 429] if mode == "open" else [503] * 3)
        if code is not None:
            body = responses[0].json()["error"]
            assert body["code"] == code and "ML_REDIS_FAILURE_MODE" in body["message"]
            assert responses[0].headers["retry-after"] == "1"
        assert client.get("/health").status_code == 200  # not rate limited either way


@pytest.mark.slow
def test_api_worker_processes_share_their_limit_through_redis(
        settings: Settings, registry: Registry, redis_server: RedisServer,
        tmp_path: Path) -> None:
    """`make api WORKERS=2` with ML_REDIS_URL: one key, one limit across both processes."""
    registry.get("sentiment")  # cached for the workers
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_MODELS": "sentiment",
           "ML_API_KEYS": "shared-key", "ML_REDIS_URL": redis_server.url,
           "ML_RATE_LIMIT_PER_SECOND": "0.001", "ML_RATE_LIMIT_BURST": "5"}
    with running("api-workers-2", env, tmp_path) as server:
        statuses = Counter(httpx.post(f"{server.url}/api/predict/sentiment",
                                      json={"text": "x"}, timeout=30,
                                      headers={"x-api-key": "shared-key",
                                               "connection": "close"}).status_code
                           for _ in range(20))
    assert statuses == {200: 5, 429: 15}
