"""The application on a local 2-node Ray cluster (1 CPU each, loopback), side by side with
the one process: the same contract and answers, replicas over both nodes, /health and
/metrics that report the cluster, a replica killed under load, autoscaling up and down.
One cluster for the module (rate limits across ingress replicas: test_ingress_limits.py).
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from api import wire
from benchmarks.services import Server, running
from ml.config import Settings
from ml.registry import Registry
from tests.cluster.conftest import RAY_WARNINGS, LocalCluster, local_cluster
from tests.cluster.contract import AUTH, CASES, KEY, PNG, comparable, problems, send
from tests.conftest import same

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), RAY_WARNINGS]

# Both servers: the same key, no rate limit (the last test sets one), no prediction cache
# (every request reaches a model), no warm-up wait beyond the models'.
COMMON = {"ML_DEVICE": "cpu", "ML_API_KEYS": KEY, "ML_RATE_LIMIT_PER_SECOND": "0",
          "ML_CACHE_ENTRIES": "0"}
# The cluster: small CPU reservations (2 nodes of 1 CPU hold every replica), the models of
# one process plus `slow` (tests/cluster/fakes.py: calls as long as asked, for the replica
# killed mid-call), sentiment and slow on two replicas, the image model autoscaled 1..2,
# fast health checks and autoscaling.
CLUSTER = {**COMMON, "ML_SERVE_NUM_CPUS": "0.1",
           "ML_MODELS": "sentiment,image,recommender,wine,slow=tests.cluster.fakes:build_slow",
           "ML_SENTIMENT_MIN_REPLICAS": "2", "ML_SENTIMENT_MAX_REPLICAS": "2",
           "ML_SLOW_MIN_REPLICAS": "2", "ML_SLOW_MAX_REPLICAS": "2", "ML_SLOW_MAX_BATCH": "4",
           "ML_IMAGE_MIN_REPLICAS": "1", "ML_IMAGE_MAX_REPLICAS": "2",
           "ML_IMAGE_TARGET_ONGOING_REQUESTS": "1",
           "ML_SERVE_HEALTH_CHECK_PERIOD_S": "1", "ML_SERVE_METRICS_INTERVAL_S": "0.5",
           "ML_SERVE_LOOK_BACK_PERIOD_S": "2", "ML_SERVE_UPSCALE_DELAY_S": "1",
           "ML_SERVE_DOWNSCALE_DELAY_S": "3"}


@pytest.fixture(scope="module")
def cluster(settings: Settings, registry: Registry) -> Iterator[LocalCluster]:
    registry.warmup()  # the artifacts are cached: the replicas load them
    with local_cluster() as found:
        found.serve({**CLUSTER, "ML_CACHE_DIR": str(settings.cache_dir)})
        yield found


@pytest.fixture(scope="module")
def one_process(settings: Settings, registry: Registry,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    registry.warmup()
    env = {**COMMON, "ML_CACHE_DIR": str(settings.cache_dir)}
    with running("api", env, tmp_path_factory.mktemp("logs")) as server:
        yield server


def client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers=AUTH, timeout=60)


def running_replicas(cluster: LocalCluster, deployment: str) -> list[dict[str, object]]:
    return [r for r in cluster.replicas(deployment) if r["state"] == "RUNNING"]


def wait_for(condition: object, timeout_s: float, what: str) -> float:
    """Seconds until `condition()` held (AssertionError after `timeout_s`)."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s}s"
        time.sleep(0.25)
    return time.monotonic() - started


def test_the_contract_holds_alike_on_one_process_and_the_cluster(
        one_process: Server, cluster: LocalCluster) -> None:
    broken, different = {}, {}
    with httpx.Client(base_url=one_process.url, timeout=60) as alone, \
            httpx.Client(base_url=cluster.url, timeout=60) as spread:
        assert "replicas" not in alone.get("/health").json()  # one process
        assert "replicas" in spread.get("/health").json()  # the cluster
        for case in CASES:
            answers = {name: send(c, case) for name, c in (("one", alone),
                                                           ("cluster", spread))}
            for name, response in answers.items():
                if found := problems(case, response):
                    broken[f"{case.id} on {name}"] = found
            mine, theirs = (comparable(case, r) for r in answers.values())
            if not same(mine, theirs, tolerance=1e-3):
                different[case.id] = (mine, theirs)
    assert not broken, broken
    assert not different, different


def test_the_same_answers_as_one_process_for_every_model(
        one_process: Server, cluster: LocalCluster, registry: Registry) -> None:
    compared = Counter[str]()
    with client(one_process.url) as alone, client(cluster.url) as spread:
        for name in registry.names():  # the built-ins and the example plugin
            model = registry.get(name)
            op = wire.operation(name, type(model))
            for query in model.examples():
                body = wire.json_body(op, query)
                headers = {"content-type": "application/json"}
                mine = alone.post(f"/api/predict/{name}", content=body, headers=headers)
                theirs = spread.post(f"/api/predict/{name}", content=body, headers=headers)
                assert mine.status_code == theirs.status_code == 200, (name, theirs.text)
                a, b = mine.json(), theirs.json()
                a.pop("latency_ms"), b.pop("latency_ms")
                assert same(a, b, tolerance=1e-3), (name, a, b)
                compared[name] += 1
    assert set(compared) >= {"sentiment", "image", "recommender", "wine"}, compared


def test_replicas_spread_over_both_nodes(cluster: LocalCluster) -> None:
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 2
    sentiment = running_replicas(cluster, "sentiment")
    assert len(sentiment) == 2
    assert len({r["node_id"] for r in sentiment}) == 2, sentiment
    everything = [r for name in ("sentiment", "image", "recommender", "wine", "Ingress")
                  for r in running_replicas(cluster, name)]
    assert {r["node_id"] for r in everything} == {n["NodeID"] for n in nodes}


def test_health_and_metrics_report_the_clusters_models_and_replicas(
        cluster: LocalCluster) -> None:
    with client(cluster.url) as http:
        expected = {name: len(running_replicas(cluster, name))
                    for name in ("sentiment", "image", "recommender", "wine", "slow")}
        assert expected["sentiment"] == 2
        wait_for(lambda: http.get("/health").json().get("replicas") == expected, 15,
                 "/health counting the replicas")
        health = http.get("/health").json()
        assert health["status"] == "healthy"
        assert health["models"] == dict.fromkeys(expected, "ready")
        http.post("/api/predict/sentiment", json={"text": "counted"})
        metrics = http.get("/metrics").json()
        for name, count in expected.items():
            assert metrics["engine"][name]["replicas"].get("RUNNING") == count, metrics
        assert metrics["models"]["sentiment"]["calls"] >= 1
        assert metrics["models"]["sentiment"]["batch_size"]["max"] >= 1
        models = {m["name"]: m for m in http.get("/api/models").json()["models"]}
        assert {n: m["loads"] for n, m in models.items()} == expected
        text = http.get("/metrics/prometheus").text
        for name in expected:
            assert f'model_ready{{model="{name}"}} 1.0' in text
        assert 'model_calls_total{model="sentiment",outcome="ok"}' in text


def test_a_model_batches_concurrent_calls_up_to_its_limit(cluster: LocalCluster) -> None:
    """@serve.batch at the model's limits with ML_<MODEL>_MAX_BATCH applied: calls of `slow`
    that arrive together go in one model call, four at most (ML_SLOW_MAX_BATCH=4)."""
    sizes: list[int] = []

    def one(value: int) -> None:
        with client(cluster.url) as http:
            response = http.post("/api/predict/slow", json={"value": value, "sleep_ms": 200})
            assert response.json()["double"] == 2 * value
            timing = re.search(r'batch;desc="(\d+)"', response.headers["server-timing"])
            sizes.append(int(timing[1]) if timing else 0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(sizes) == 16 and max(sizes) == 4, sizes


def test_a_replica_killed_under_load_costs_at_most_a_503_and_is_replaced(
        cluster: LocalCluster) -> None:
    """Six clients keep calls of one second on both replicas of `slow`; one replica is
    killed: the calls it held get a JSON 503, every other its answer, and Serve has two
    replicas again."""
    import ray

    victims = running_replicas(cluster, "slow")
    assert len(victims) == 2
    stop = threading.Event()
    answers: list[tuple[int | str, str | None]] = []

    def load(worker: int) -> None:
        with client(cluster.url) as http:
            sent = 0
            while not stop.is_set():
                sent += 1
                try:
                    response = http.post("/api/predict/slow",
                                         json={"value": sent % 1000, "sleep_ms": 1000})
                except httpx.HTTPError as exc:  # a hang or a dropped connection
                    answers.append((type(exc).__name__, None))
                    continue
                if response.status_code == 200:
                    right = response.json()["double"] == 2 * (sent % 1000)
                    answers.append((200 if right else "wrong answer", None))
                else:
                    answers.append((response.status_code, response.json()["error"]["code"]))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(2.5)
    ray.kill(ray.get_actor(str(victims[0]["actor_name"]), namespace="serve"),
             no_restart=True)
    killed = time.monotonic()
    time.sleep(3.0)
    stop.set()
    for thread in threads:
        thread.join(90)
    outcomes = Counter(answers)
    print(f"\nanswers around the kill: {dict(outcomes)}")
    assert set(outcomes) == {(200, None), (503, "model_unavailable")}, outcomes
    with client(cluster.url) as http:
        wait_for(lambda: len(running_replicas(cluster, "slow")) == 2
                 and http.get("/health").json().get("replicas", {}).get("slow") == 2,
                 90, "slow back to 2 replicas")
        print(f"slow back to 2 running replicas within {time.monotonic() - killed:.1f}s "
              "of the kill")
        assert http.get("/health").json()["status"] == "healthy"
        assert http.post("/api/predict/slow", json={"value": 4}).json()["double"] == 8
    assert {r["actor_name"] for r in running_replicas(cluster, "slow")} != \
        {r["actor_name"] for r in victims}


def test_autoscaling_goes_up_to_max_under_load_then_back_down(cluster: LocalCluster) -> None:
    assert len(running_replicas(cluster, "image")) == 1
    body = {"image_base64": base64.b64encode(PNG).decode()}
    stop = threading.Event()
    statuses = Counter[int]()

    def load() -> None:
        with client(cluster.url) as http:
            while not stop.is_set():
                statuses[http.post("/api/predict/image", json=body).status_code] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        up = wait_for(lambda: len(running_replicas(cluster, "image")) == 2, 120,
                      "the image model scaled to 2 replicas")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert set(statuses) == {200}, statuses
    down = wait_for(lambda: len(running_replicas(cluster, "image")) == 1, 120,
                    "the image model back to 1 replica")
    print(f"\nimage: 1 -> 2 replicas in {up:.1f}s of load ({sum(statuses.values())} "
          f"requests), back to 1 {down:.1f}s after it stopped")
