"""The Ray Serve path: the application of `make cluster` (api.cluster, a local Ray cluster on
127.0.0.1, our API as the ingress) started here and measured like the one process.

`serving` starts it for the harness (path "ray-serve"). `costs` measures what a request
costs each way on this machine: throughput and CPU milliseconds per request of every
process serving it (the one process; the cluster's driver, GCS, raylet, proxy, ingress and
model replicas), the figures the scale-out model in BENCHMARKS.md is built from.

    python -m benchmarks.ray_path [--seconds 8]      # costs, written to results/
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from benchmarks.load import http_load
from benchmarks.machine import machine_info
from benchmarks.services import ROOT, Server, free_port, running, wait_ready
from ml.config import Settings

RESULTS = Path(__file__).resolve().parent / "results"
# The cluster of `make cluster` on this machine: every replica reserves a fraction of a CPU
# (they share the cores, like the one process's threads), one ingress replica.
CLUSTER_ENV = {"ML_SERVE_NUM_CPUS": "0.25", "RAY_USAGE_STATS_ENABLED": "0"}


def available() -> bool:
    """Whether Ray Serve is installed (requirements-ray.txt)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


@contextlib.contextmanager
def serving(env: Mapping[str, str], log_dir: Path, ready_timeout: float = 300.0
            ) -> Iterator[Server]:
    """`python -m api.cluster` (what `make cluster` runs) on a free port with `env`, ready
    (every model warm) before it is yielded; SIGTERM afterwards, which stops the Ray
    processes it started."""
    port = free_port()
    log = log_dir / f"ray-serve-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **CLUSTER_ENV, **env}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cluster", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_ready(server, "/health/ready", ready_timeout, interval=0.5, what="the cluster")
        yield server
    finally:
        server.stop(timeout=60.0)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` and every process under it."""
    total = 0.0
    root = psutil.Process(pid)
    for process in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def measure(server: Server, route: str, bodies: list[bytes], *, concurrency: int,
            seconds: float) -> dict[str, Any]:
    """Throughput, latency and CPU ms per answered request of `server`'s whole tree."""
    http_load(server.url, route, bodies, concurrency=concurrency, requests=50)  # warm
    cpu = tree_cpu_seconds(server.process.pid)
    result = http_load(server.url, route, bodies, concurrency=concurrency,
                       requests=10**9, seconds=seconds)
    spent = tree_cpu_seconds(server.process.pid) - cpu
    latencies = sorted(result.latencies)
    answered = len(latencies)
    return {"concurrency": concurrency, "requests": answered, "errors": result.errors,
            "throughput_rps": round(result.throughput, 1),
            "p50_ms": round(latencies[answered // 2] * 1e3, 2) if answered else None,
            "p99_ms": round(latencies[int(answered * 0.99)] * 1e3, 2) if answered else None,
            "server_cpu_ms_per_request": round(spent / answered * 1e3, 3) if answered
            else None}


def costs(settings: Settings, *, seconds: float = 8.0, concurrency: int = 8,
          progress: Any = print) -> dict[str, Any]:
    """Sentiment (a cheap model: the serving stack's own cost) and image (a heavy one)
    through the one process and through the cluster, one after the other."""
    from api import wire
    from ml.registry import Registry

    registry = Registry(settings.replace(models=("sentiment", "image")))
    registry.warmup()
    bodies = {}
    for name in registry.names():
        op = wire.operation(name, registry.model_class(name))
        queries = list(dict.fromkeys(registry.get(name).workload(200)))
        bodies[name] = [wire.json_body(op, q) for q in queries]
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_MODELS": "sentiment,image",
           "ML_DEVICE": "cpu", "ML_CACHE_ENTRIES": "0", "ML_RATE_LIMIT_PER_SECOND": "0"}
    out: dict[str, Any] = {"machine": machine_info(), "seconds": seconds}
    with tempfile.TemporaryDirectory() as logs:
        starts = {"one-process": partial(running, "api", env, Path(logs)),
                  "ray-serve": partial(serving, env, Path(logs))}
        for path, start in starts.items():
            with start() as server:
                out[path] = {}
                for name in ("sentiment", "image"):
                    found = measure(server, f"/api/predict/{name}", bodies[name],
                                    concurrency=concurrency, seconds=seconds)
                    out[path][name] = found
                    progress(f"{path:>11} {name:<9} {found}")
                out[path]["peak_rss_mb"] = round(server.peak_rss_mb(), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ray_path",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_costs.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the servers on TERM
    found = costs(Settings.from_env(), seconds=args.seconds, concurrency=args.concurrency)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
