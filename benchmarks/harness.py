"""Side-by-side call paths: in-process, HTTP to the one process, and a microservice hop.

Every path serves the same models from the same cached artifacts and gets the same inputs
in the same run. Servers are started here on 127.0.0.1 and stopped by PID.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from api import wire
from benchmarks import pinned
from benchmarks.load import LoadResult, http_load, inprocess_load, wrk_load, wrk_version
from benchmarks.services import Server, running
from benchmarks.stats import summarize
from ml.config import Settings
from ml.contract import call
from ml.registry import Registry
from ml.threads import single_threaded_blas

MODELS = ("sentiment", "image", "recommender")  # the default plan: the built-in models
PATHS = ("in-process", "http", "http-unbatched", "hop", "fastapi-peer", "ray-serve")
PEER_MODELS = ("sentiment",)  # the FastAPI peer serves the stock sklearn sentiment pipeline
UNBATCHED_MODELS = ("sentiment", "image")  # the same one process with ML_BATCHING=false
# Production features stay on in the measured servers (auth middleware, metrics, access
# log, deadlines, queue limits). The rate limit is lifted far above the load so that it
# measures serving, not throttling, and the prediction cache is off because the inputs
# repeat: cached answers would measure the cache, and the peers have none.
SERVER_ENV = {"ML_RATE_LIMIT_PER_SECOND": "1000000", "ML_RATE_LIMIT_BURST": "1000000",
              "ML_DEVICE": "cpu", "ML_CACHE_ENTRIES": "0"}


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    quick: bool = False
    models: tuple[str, ...] = MODELS
    paths: tuple[str, ...] = PATHS
    workers: tuple[int, ...] = (1, 2)  # API-only multi-worker scaling; () skips it
    device: str = "cpu"  # the image model's device in every server and in-process ("cuda")
    pinned: bool = True  # the HTTP path against the floor, server and wrk on their own cores

    def levels(self, heavy: bool) -> tuple[int, ...]:
        """Concurrency levels: a model with heavy per-request work (decoding an image) is
        ~100x slower per request than the others."""
        return (1, 16) if heavy else (1, 8, 32)

    def requests_at_one(self, heavy: bool) -> int:
        base = 150 if heavy else 2000
        return max(10, base // 40) if self.quick else base

    def seconds_high(self, heavy: bool) -> float:
        return 1.0 if self.quick else (8.0 if heavy else 5.0)

    @property
    def scenario_texts(self) -> int:
        return 100 if self.quick else 1000


class Inputs:
    """The same queries for every path, from each model's own workload (corpus tweets, a
    photo, household ids): in-process calls and the HTTP bodies that carry them."""

    def __init__(self, registry: Registry, count: int = 2000) -> None:
        self.registry = registry
        self.queries = {name: registry.get(name).workload(count) for name in registry.names()}
        self.ops = {name: wire.operation(name, registry.model_class(name))
                    for name in registry.names()}

    def heavy(self, model: str) -> bool:
        return bool(self.registry.get(model).heavy_prepare)

    def bodies(self, model: str) -> list[bytes]:
        unique = list(dict.fromkeys(self.queries[model]))
        return [wire.json_body(self.ops[model], q) for q in unique]

    def call(self, model: str) -> tuple[Callable[[Any], object], list[Any]]:
        """The model called directly (prepare + predict, no engine) and its queries."""
        found = self.registry.get(model)
        return (lambda query: call(found, query)), list(self.queries[model])


def figures(result: LoadResult) -> dict[str, Any]:
    """Latency summary, throughput, errors and the client's CPU share."""
    out: dict[str, Any] = summarize(result.latencies) if result.latencies else {"n": 0}
    out.update({"throughput_rps": round(result.throughput, 1), "errors": result.errors,
                "elapsed_s": round(result.elapsed, 3),
                "client_cpu_share": round(result.client_cpu / result.elapsed, 3)
                if result.elapsed else 0.0})
    return out


@contextlib.contextmanager
def topology(paths: tuple[str, ...], models: tuple[str, ...], settings: Settings,
             logs: Path, device: str = "cpu") -> Iterator[dict[str, Any]]:
    """Start the servers the chosen paths need; yields their URLs and Server handles."""
    env = {**SERVER_ENV, "ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": device}
    with contextlib.ExitStack() as stack:
        found: dict[str, Any] = {"servers": {}}
        if "http" in paths:
            single = stack.enter_context(running("one-process", env, logs))
            found["http"] = single.url
            found["servers"]["one-process"] = single
        if "http-unbatched" in paths:
            unbatched = stack.enter_context(
                running("one-process", {**env, "ML_BATCHING": "false"}, logs))
            found["http-unbatched"] = unbatched.url
            found["servers"]["one-process-unbatched"] = unbatched
        if "fastapi-peer" in paths:
            if importlib.util.find_spec("fastapi") is None:
                found["notes"] = ["FastAPI peer skipped: fastapi is not installed "
                                  "(pip install -r requirements-dev.txt)"]
            elif "sentiment" in models:
                peer = stack.enter_context(running("fastapi-peer", env, logs))
                found["fastapi-peer"] = peer.url
                found["servers"]["fastapi-peer"] = peer
        if "hop" in paths:
            model_servers: dict[str, Server] = {}
            for model in models:
                model_servers[model] = stack.enter_context(
                    running("api", {**env, "ML_MODELS": model}, logs))
            targets = {m: s.url for m, s in model_servers.items()}
            if "sentiment" in model_servers:
                targets["batch"] = model_servers["sentiment"].url
            front = stack.enter_context(running("hop", {"HOP_TARGETS": json.dumps(targets)},
                                                logs))
            found["hop"] = front.url
            found["servers"].update({"hop-front": front,
                                     **{f"hop-{m}": s for m, s in model_servers.items()}})
        if "ray-serve" in paths:  # `make cluster`: a local Ray cluster, our API its ingress
            from benchmarks import ray_path

            if ray_path.available():
                cluster = stack.enter_context(
                    ray_path.serving({**env, "ML_MODELS": ",".join(models)}, logs))
                found["ray-serve"] = cluster.url
                found["servers"]["ray-serve"] = cluster
            else:
                found.setdefault("notes", []).append(
                    "Ray Serve path skipped: ray is not installed "
                    "(pip install -r requirements-ray.txt)")
        yield found


def run(plan: Plan, settings: Settings | None = None,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure everything the plan asks for; returns the result tree."""
    settings = settings or Settings.from_env()
    single_threaded_blas()  # in-process runs as a serving process does (ml.threads)
    registry = Registry(settings.replace(models=plan.models, device=plan.device))
    registry.warmup()
    inputs = Inputs(registry)
    results: dict[str, Any] = {"paths": {}, "scenario_1000_texts": {}, "memory": {},
                               "image_device": plan.device}
    with tempfile.TemporaryDirectory() as logs, \
            topology(plan.paths, plan.models, settings, Path(logs), plan.device) as servers:
        results["notes"] = servers.get("notes", [])
        for path in plan.paths:
            if path not in ("in-process",) and path not in servers:
                continue  # e.g. the FastAPI peer when fastapi is missing
            results["paths"][path] = {}
            for model in plan.models:
                if (path == "fastapi-peer" and model not in PEER_MODELS) or \
                        (path == "http-unbatched" and model not in UNBATCHED_MODELS):
                    continue
                per_model: dict[str, Any] = {}
                heavy = inputs.heavy(model)
                for concurrency in plan.levels(heavy):
                    count = plan.requests_at_one(heavy) if concurrency == 1 else 10**9
                    seconds = 120.0 if concurrency == 1 else plan.seconds_high(heavy)
                    # warm: one pass over the distinct inputs (at most `count`), so that
                    # every level measures the steady state, the words of every text seen
                    if path == "in-process":
                        call, items = inputs.call(model)
                        inprocess_load(call, items, concurrency=concurrency,
                                       requests=min(count, len(inputs.bodies(model))))
                        result = inprocess_load(call, items, concurrency=concurrency,
                                                requests=count, seconds=seconds)
                    else:
                        url = servers[path]
                        route = f"/api/predict/{model}"
                        bodies = inputs.bodies(model)
                        http_load(url, route, bodies, concurrency=concurrency,
                                  requests=min(count, len(bodies)))
                        result = http_load(url, route, bodies, concurrency=concurrency,
                                           requests=count, seconds=seconds)
                    per_model[f"c{concurrency}"] = figures(result)
                    progress(f"{path:>10} {model:<11} c={concurrency:<3} "
                             f"p50 {per_model[f'c{concurrency}'].get('p50_ms', 0):8.3f} ms  "
                             f"{result.throughput:8.1f} req/s  errors {result.errors}")
                results["paths"][path][model] = per_model
            if "sentiment" in plan.models and path not in ("fastapi-peer", "http-unbatched"):
                results["scenario_1000_texts"][path] = scenario(
                    path, plan, registry, inputs, servers)
                progress(f"{path:>10} 1000 texts: {results['scenario_1000_texts'][path]}")
        results["memory"] = memory(servers["servers"])
    if plan.workers:
        results["workers"] = workers_scaling(plan, settings, inputs, progress)
    if plan.pinned and "sentiment" in plan.models:
        configs = ("floor", "one-process") if plan.quick else tuple(pinned.CONFIGS)
        results["pinned"] = pinned.run(settings, quick=plan.quick, configs=configs,
                                       progress=progress)
    results["ratios"] = ratios(results)
    results["targets"] = targets(results)
    return results


def workers_scaling(plan: Plan, settings: Settings, inputs: Inputs,
                    progress: Callable[[str], None]) -> dict[str, Any]:
    """Sentiment throughput of the API-only server with 1 and 2 worker processes
    (`make api WORKERS=n`), at concurrency 32.

    Both servers stay up (an idle one costs no CPU) and are measured in alternating rounds,
    1, 2, 1, 2, ...: this machine's speed drifts by tens of percent over minutes, and
    alternation lets both see the same drift. Each round gives a 2/1 ratio from two
    neighbouring measurements; the figure is the median of those ratios (a paired design:
    drift between rounds cancels). The throughputs shown are each count's median round.
    The load comes from wrk where it is installed: on 2 cores the client shares the CPU
    with the workers, and wrk needs far less of it than the Python client."""
    env = {**SERVER_ENV, "ML_CACHE_DIR": str(settings.cache_dir), "ML_MODELS": "sentiment"}
    bodies = inputs.bodies("sentiment")
    rounds = 1 if plan.quick else 5
    seconds = plan.seconds_high(False) / (1 if plan.quick else 2)
    client = wrk_version()

    def measure(url: str, seconds: float) -> dict[str, Any]:
        if client is not None:
            return wrk_load(url, "/api/predict/sentiment", bodies, concurrency=32,
                            seconds=seconds)
        return figures(http_load(url, "/api/predict/sentiment", bodies, concurrency=32,
                                 requests=10**9, seconds=seconds))

    runs: dict[str, list[dict[str, Any]]] = {str(w): [] for w in plan.workers}
    with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as stack:
        servers = {str(w): stack.enter_context(running(f"api-workers-{w}", env, Path(logs)))
                   for w in plan.workers}
        for server in servers.values():
            measure(server.url, 1.0)  # warm every worker's connections and caches
        for round_ in range(rounds):
            for workers, server in servers.items():
                result = measure(server.url, seconds)
                runs[workers].append(result)
                progress(f"api workers={workers} round {round_ + 1} c=32 "
                         f"{result['throughput_rps']:8.1f} req/s errors {result['errors']}")
    out: dict[str, Any] = {"client": client or "python asyncio client (uvloop)"}
    for workers, results in runs.items():
        median = sorted(results, key=lambda r: r["throughput_rps"])[len(results) // 2]
        out[workers] = {**median, "rounds_rps": [r["throughput_rps"] for r in results]}
    if "1" in runs and "2" in runs:
        pairs = [two["throughput_rps"] / one["throughput_rps"]
                 for one, two in zip(runs["1"], runs["2"], strict=True) if one["throughput_rps"]]
        if pairs:
            out["round_ratios"] = [round(r, 2) for r in pairs]
            out["two_over_one"] = round(statistics.median(pairs), 2)
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The throughput issue's targets, each with the measured value and whether it is met."""
    paths = results["paths"]

    def get(path: str, model: str, level: str, key: str) -> float | None:
        value = paths.get(path, {}).get(model, {}).get(level, {}).get(key)
        return float(value) if value else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    rows = []

    def add(what: str, value: float | None, goal: str, met: bool | None) -> None:
        rows.append({"target": what, "value": value, "goal": goal, "met": met})

    value = ratio(get("http", "sentiment", "c1", "p50_ms"),
                  get("fastapi-peer", "sentiment", "c1", "p50_ms"))
    add("sentiment c=1 p50, one process / FastAPI peer", value, "<= 0.6",
        None if value is None else value <= 0.6)
    value = ratio(get("http", "sentiment", "c32", "throughput_rps"),
                  get("fastapi-peer", "sentiment", "c32", "throughput_rps"))
    add("sentiment c=32 requests/s, one process / FastAPI peer", value, ">= 2",
        None if value is None else value >= 2)
    ours, peer = get("http", "sentiment", "c32", "p99_ms"), \
        get("fastapi-peer", "sentiment", "c32", "p99_ms")
    add("sentiment c=32 p99 ms, one process vs FastAPI peer", ours,
        f"< peer ({peer})" if peer else "< peer", None if ours is None or peer is None
        else ours < peer)
    value = ratio(get("http", "image", "c16", "throughput_rps"),
                  get("http-unbatched", "image", "c16", "throughput_rps"))
    add("image c=16 requests/s, batching on / off", value, ">= 1.5",
        None if value is None else value >= 1.5)
    value = ratio(get("http", "image", "c1", "p50_ms"),
                  get("http-unbatched", "image", "c1", "p50_ms"))
    add("image c=1 p50, batching on / off", value, "<= 1.10",
        None if value is None else value <= 1.10)
    value = results.get("memory", {}).get("single_over_split")
    add("memory, one process / microservice split (peak RSS)", value, "<= 0.6",
        None if value is None else value <= 0.6)
    value = results.get("workers", {}).get("two_over_one")
    add("API-only sentiment c=32 requests/s, 2 workers / 1", value, ">= 1.6",
        None if value is None else value >= 1.6)
    floor = results.get("pinned", {}).get("configs", {})
    one, api = floor.get("one-process", {}), floor.get("api-only", {})
    value = one.get("rps_over_floor")
    add("sentiment c=32 requests/s, one process (every feature on) / HTTP floor", value,
        ">= 0.20", None if value is None else value >= 0.20)
    value = one.get("p50_over_floor")
    add("sentiment c=1 p50, one process / HTTP floor", value, "<= 2.5",
        None if value is None else value <= 2.5)
    value = ratio(api.get("rps"), one.get("rps"))
    add("sentiment c=32 requests/s, API-only / one process", value, "0.85 to 1.15",
        None if value is None else 0.85 <= value <= 1.15)
    value = one.get("errors")
    add("non-2xx answers in the pinned runs (every configuration)",
        None if not floor else sum(c.get("errors", 0) for c in floor.values()), "0",
        None if value is None else not any(c.get("errors") for c in floor.values()))
    return rows


def scenario(path: str, plan: Plan, registry: Registry, inputs: Inputs,
             servers: dict[str, Any]) -> dict[str, float]:
    """The product spec's scenario: N texts one by one, then as one batch."""
    queries = (inputs.queries["sentiment"] * 2)[:plan.scenario_texts]
    texts = [q.text for q in queries]  # type: ignore[attr-defined]
    if path == "in-process":
        model = registry.get("sentiment")
        started = time.perf_counter()
        for query in queries:
            call(model, query)
        one_by_one = time.perf_counter() - started
        batch_times = []
        for _ in range(5):
            started = time.perf_counter()
            model.predict([model.prepare(q) for q in queries])
            batch_times.append(time.perf_counter() - started)
        return {"texts": len(texts), "one_by_one_ms": round(one_by_one * 1e3, 2),
                "batch_ms": round(sorted(batch_times)[2] * 1e3, 2)}
    url = servers[path]
    route = "/api/predict/sentiment"  # the hop front forwards the same route
    started = time.perf_counter()
    result = http_load(url, route, [json.dumps({"text": t}).encode() for t in texts],
                       concurrency=1, requests=len(texts))
    one_by_one = time.perf_counter() - started
    batch_route = "/api/predict/batch"
    body = {"texts": texts, "model": "sentiment"}
    batch_times, server_ms = [], []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(5):
            started = time.perf_counter()
            response = client.post(batch_route, json=body)
            batch_times.append(time.perf_counter() - started)
            server_ms.append(response.json().get("latency_ms", 0.0))
    return {"texts": len(texts), "one_by_one_ms": round(one_by_one * 1e3, 2),
            "batch_ms": round(sorted(batch_times)[2] * 1e3, 2),
            "batch_server_model_ms": round(sorted(server_ms)[2], 2),
            "errors": result.errors}


def memory(servers: dict[str, Server]) -> dict[str, Any]:
    """Peak RSS of every server process; single process vs the sum of the split."""
    peaks = {name: round(server.peak_rss_mb(), 1) for name, server in servers.items()}
    hop = {name: mb for name, mb in peaks.items() if name.startswith("hop-")}
    out: dict[str, Any] = {"peak_rss_mb": peaks}
    if "one-process" in peaks and hop:
        out["single_process_mb"] = peaks["one-process"]
        out["microservices_total_mb"] = round(sum(hop.values()), 1)
        out["single_over_split"] = round(peaks["one-process"] / sum(hop.values()), 3)
    return out


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """p50 at concurrency 1 relative to in-process, per model and path."""
    out: dict[str, Any] = {}
    paths = results["paths"]
    base = paths.get("in-process", {})
    for model, figs in base.items():
        floor = figs.get("c1", {}).get("p50_ms")
        if not floor:
            continue
        out[model] = {path: round(paths[path][model]["c1"]["p50_ms"] / floor, 1)
                      for path in paths if model in paths[path]}
        if "http" in paths and "hop" in paths:
            out[model]["hop_over_http"] = round(
                paths["hop"][model]["c1"]["p50_ms"] / paths["http"][model]["c1"]["p50_ms"], 2)
    return out
