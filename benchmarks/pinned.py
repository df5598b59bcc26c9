"""The HTTP serving path against this machine's floor, pinned: server on one core, wrk on
the other.

Every configuration serves the sentiment model with the prediction cache off (the model
really runs). The floor is a bare ASGI app under the same uvicorn flags that reads the body,
parses the JSON and answers a constant (benchmarks/floor.py). "All features" is the one
process as `make run` serves it with an API key required and sent, the rate limit active
but far from reached, metrics, the access log, request ids, deadlines and body limits; the
API-only server (`make api`) is measured the same way; then the one process again with one
feature switched off at a time, so that each feature's cost shows. The Open Inference
Protocol (KServe V2) route of the same model is measured on the very same one-process
server: the same text per request, and a batch of texts per request; its ratio to the spec
route (texts answered per second) shows what the protocol costs.

Servers run on core 0 (`taskset -c 0`) and wrk on core 1, where the machine has both. All
servers stay up and are measured in alternating rounds (floor, all features, ...), so each
configuration sees the same drift of this shared machine; figures are per-configuration
medians over rounds, and every ratio is taken within a round, then the median of those.
Each server's CPU time per request (from /proc) is reported too: it is what the core was
busy with, and far less sensitive than requests/s to other work on the machine.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from benchmarks.load import wrk_load, wrk_version
from benchmarks.services import Server, running
from ml.config import Settings

KEY = "bench-key"
BODY = b'{"text": "what a lovely day, I really enjoyed the film and the music"}'
ROUTE = "/api/predict/sentiment"
SERVER_CPU, CLIENT_CPU = "0", "1"
ALL_ON = {"ML_API_KEYS": KEY, "ML_RATE_LIMIT_PER_SECOND": "1000000",
          "ML_RATE_LIMIT_BURST": "1000000", "ML_CACHE_ENTRIES": "0", "ML_MODELS": "sentiment",
          "ML_DEVICE": "cpu"}
# name: (server mode, environment on top of ALL_ON, what it shows)
CONFIGS: dict[str, tuple[str, dict[str, str], str]] = {
    "floor": ("floor", {}, "bare ASGI app: read, parse, constant answer"),
    "one-process": ("one-process", {}, "`make run`, every feature on"),
    "api-only": ("api", {}, "`make api`, every feature on"),
    "no-auth": ("one-process", {"ML_API_KEYS": ""}, "one process, API keys off"),
    "no-rate-limit": ("one-process", {"ML_RATE_LIMIT_PER_SECOND": "0"},
                      "one process, rate limit off"),
    "no-access-log": ("one-process", {"ML_ACCESS_LOG": "false"},
                      "one process, access log off"),
    "no-inline": ("one-process", {"ML_INLINE_BUDGET_MS": "0"},
                  "one process, model on its batcher thread (no loop batching)"),
    "no-batching": ("one-process", {"ML_BATCHING": "false"},
                    "one process, no batching at all (a thread per call)"),
    "linear": ("one-process", {"ML_SENTIMENT_CNN": "false"},
               "one process, the linear sentiment model alone (word CNN off)"),
    "tweets": ("one-process", {}, "one process, 2,000 distinct tweets (the word CNN runs "
               "for the texts the linear model is unsure of)"),
    "tweets-linear": ("one-process", {"ML_SENTIMENT_CNN": "false"},
                      "the linear model alone, the same 2,000 tweets"),
    "v2": ("one-process", {}, "the same server, V2 /v2/models/sentiment/infer, one text"),
    "v2-batch": ("one-process", {}, "the same server, V2, 8 texts per request"),
}
FEATURES = ("no-auth", "no-rate-limit", "no-access-log", "no-inline", "no-batching")
V2_ROUTE = "/v2/models/sentiment/infer"
TEXT = "what a lovely day, I really enjoyed the film and the music"
V2_BATCH = 8
TWEETS = ("tweets", "tweets-linear")  # configurations that POST distinct tweets to ROUTE
# name: (route, body, texts per request) where a configuration sends other than BODY to ROUTE
REQUESTS: dict[str, tuple[str, bytes, int]] = {
    "v2": (V2_ROUTE, json.dumps({"inputs": [{"name": "text", "shape": [1],
                                             "datatype": "BYTES", "data": [TEXT]}]}).encode(),
           1),
    "v2-batch": (V2_ROUTE, json.dumps({"inputs": [{
        "name": "text", "shape": [V2_BATCH], "datatype": "BYTES",
        "data": [f"{TEXT} ({i})" for i in range(V2_BATCH)]}]}).encode(), V2_BATCH),
}


def cpu_seconds(server: Server) -> float:
    """CPU time the server's processes (workers included) have used so far."""
    process = psutil.Process(server.process.pid)
    total = 0.0
    for each in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = each.cpu_times()
            total += times.user + times.system
    return total


def settle(server: Server, timeout_s: float = 5.0) -> None:
    """Wait until `server` has gone idle: all servers share one core, so work a server does
    after its measurement would be charged to whichever is measured next."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = cpu_seconds(server)
        time.sleep(0.2)
        if cpu_seconds(server) - before < 0.005:  # under 2.5% of the core
            return


def tweet_bodies(count: int = 2000) -> list[bytes]:
    """Bodies of `count` distinct corpus tweets, as the harness sends them (the sentiment
    model's workload)."""
    from ml.sentiment import workload_texts

    return [json.dumps({"text": text}).encode() for text in workload_texts(count)]


def sent(name: str, tweets: list[bytes]) -> tuple[str, list[bytes]]:
    """The route and the bodies (cycled) that configuration `name` sends."""
    if name in TWEETS:
        return ROUTE, tweets
    route, body, _ = REQUESTS.get(name, (ROUTE, BODY, 1))
    return route, [body]


def measure(server: Server, seconds: float, headers: dict[str, str], route: str = ROUTE,
            bodies: tuple[bytes, ...] | list[bytes] = (BODY,)) -> dict[str, Any]:
    """Throughput and tail at concurrency 32, CPU per request, and p50 at concurrency 1."""
    before = cpu_seconds(server)
    high = wrk_load(server.url, route, bodies, concurrency=32, seconds=seconds,
                    headers=headers, cpus=CLIENT_CPU)
    used = cpu_seconds(server) - before
    one = wrk_load(server.url, route, bodies, concurrency=1, seconds=max(1.0, seconds / 2),
                   headers=headers, cpus=CLIENT_CPU)
    return {"rps": high["throughput_rps"], "p99_ms": high["p99_ms"],
            "errors": high["errors"] + one["errors"],
            "cpu_us_per_request": round(used / high["n"] * 1e6, 1) if high["n"] else None,
            "c1_p50_ms": one["p50_ms"]}


def run(settings: Settings, *, quick: bool = False,
        configs: tuple[str, ...] = tuple(CONFIGS),
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure `configs` side by side; returns per-configuration medians and ratios."""
    if wrk_version() is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    rounds, seconds = (1, 1.0) if quick else (3, 4.0)
    headers = {"Authorization": f"Bearer {KEY}"}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as stack:
        servers, started = {}, {}
        for name in configs:  # configurations of the same server and settings share it
            mode, env, _ = CONFIGS[name]
            key = (mode, tuple(sorted(env.items())))
            if key not in started:
                full = {**ALL_ON, "ML_CACHE_DIR": str(settings.cache_dir), **env}
                started[key] = stack.enter_context(running(mode, full, Path(logs),
                                                           cpus=SERVER_CPU))
            servers[name] = started[key]
        tweets = tweet_bodies() if set(TWEETS) & set(configs) else []
        for name, server in servers.items():  # warm: connections, caches, inline decision
            route, bodies = sent(name, tweets)
            wrk_load(server.url, route, bodies, concurrency=32, seconds=1, headers=headers,
                     cpus=CLIENT_CPU)
        for round_ in range(rounds):
            for name, server in servers.items():
                route, bodies = sent(name, tweets)
                result = measure(server, seconds, headers, route, bodies)
                settle(server)  # its after-work (closing 32 connections...) not on the next
                runs[name].append(result)
                progress(f"pinned {name:<14} round {round_ + 1}: {result['rps']:9.1f} req/s "
                         f"c=32, p50 {result['c1_p50_ms']:.3f} ms c=1, "
                         f"{result['cpu_us_per_request']} us CPU/request")
    return summarize(runs, pinned=bool(psutil.cpu_count() and psutil.cpu_count() >= 2))


def summarize(runs: dict[str, list[dict[str, Any]]], *, pinned: bool) -> dict[str, Any]:
    """Medians per configuration; ratios to the floor and feature costs, per round."""
    out: dict[str, Any] = {"pinned": pinned, "configs": {}}
    floor = runs.get("floor", [])
    base = runs.get("one-process", [])
    for name, results in runs.items():
        row: dict[str, Any] = {
            "what": CONFIGS[name][2], "rounds_rps": [r["rps"] for r in results],
            **{key: statistics.median(r[key] for r in results)
               for key in ("rps", "p99_ms", "c1_p50_ms", "cpu_us_per_request")},
            "errors": sum(r["errors"] for r in results)}
        if floor and name != "floor":
            row["rps_over_floor"] = _median_ratio(results, floor, "rps")
            row["p50_over_floor"] = _median_ratio(results, floor, "c1_p50_ms")
            row["cpu_over_floor"] = _median_ratio(results, floor, "cpu_us_per_request")
        if base and name in FEATURES:
            row["gain_when_off"] = round(_median_ratio(results, base, "rps") - 1, 3)
        if base and name in REQUESTS:
            texts = REQUESTS[name][2]
            row["texts_per_request"] = texts
            row["texts_over_spec_route"] = round(_median_ratio(results, base, "rps") * texts,
                                                 3)
        out["configs"][name] = row
    return out


def _median_ratio(results: list[dict[str, Any]], reference: list[dict[str, Any]],
                  key: str) -> float:
    """The median over rounds of result/reference, each round against its own reference."""
    ratios = [float(a[key]) / float(b[key]) for a, b in zip(results, reference, strict=True)]
    return round(statistics.median(ratios), 3)
