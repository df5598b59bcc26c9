"""A rate limit with two ingress replicas on the cluster: per replica, a key gets twice its
limit; through Redis (ML_REDIS_URL) it gets it once. With Redis down the ingress fails open
(each replica's own bucket), and shares its limit again when Redis is back."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from ml.config import Settings
from ml.registry import Registry
from tests.cluster.conftest import RAY_WARNINGS, LocalCluster, RedisServer, local_cluster
from tests.cluster.contract import AUTH, KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), RAY_WARNINGS]
BURST = 5


@pytest.fixture(scope="module")
def cluster(settings: Settings, registry: Registry, redis_server: RedisServer
            ) -> Iterator[LocalCluster]:
    registry.get("sentiment")  # cached for the replica
    with local_cluster() as found:
        found.serve({"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu",
                     "ML_MODELS": "sentiment", "ML_API_KEYS": KEY,
                     "ML_SERVE_NUM_CPUS": "0.2", "ML_INGRESS_MIN_REPLICAS": "2",
                     "ML_INGRESS_MAX_REPLICAS": "2", "ML_REDIS_URL": redis_server.url,
                     "ML_RATE_LIMIT_PER_SECOND": "0.001",
                     "ML_RATE_LIMIT_BURST": str(BURST)})
        yield found


def statuses(cluster: LocalCluster, count: int) -> Counter[int]:
    """Statuses of `count` predictions with one key, each on a new connection (the proxy
    picks an ingress replica per request)."""
    with httpx.Client(base_url=cluster.url, headers=AUTH, timeout=30) as http:
        return Counter(http.post("/api/predict/sentiment", json={"text": "hi"},
                                 headers={"connection": "close"}).status_code
                       for _ in range(count))


def test_two_ingress_replicas_on_both_nodes(cluster: LocalCluster) -> None:
    replicas = [r for r in cluster.replicas("Ingress") if r["state"] == "RUNNING"]
    assert len(replicas) == 2
    assert len({r["node_id"] for r in replicas}) == 2


def test_the_limit_holds_once_then_fails_open_then_holds_again(
        cluster: LocalCluster, redis_server: RedisServer) -> None:
    assert statuses(cluster, 20) == {200: BURST, 429: 20 - BURST}  # once, not per replica
    # Redis down: fail open. Each replica's own bucket (still full) decides, and both
    # replicas answer: more than one bucket's worth gets through, at most two
    redis_server.stop()
    opened = statuses(cluster, 30)
    assert set(opened) <= {200, 429} and BURST < opened[200] <= 2 * BURST, opened
    # Redis back (empty): shared again once each replica's retry pause is over
    redis_server.start()
    time.sleep(1.5)
    assert statuses(cluster, 20) == {200: BURST, 429: 20 - BURST}
