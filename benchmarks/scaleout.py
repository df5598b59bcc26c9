"""The scale-out figure: image-model throughput through the Ray Serve application with 1, 2,
4, ... N replicas (one CPU and one runtime thread each), beside the one process on the same
machine. Meant for a machine with more cores than replicas (16 cores: up to 8 replicas plus
the proxy, the ingress replicas and the load generator).

    python -m benchmarks.scaleout                         # 1 2 4 8 replicas, 20 s each
    python -m benchmarks.scaleout --replicas 1 2 --seconds 5

Each count gets a fresh `make cluster` application (python -m api.cluster) with one ingress
replica per four image replicas, loaded at four requests in flight per image replica, the
photos of the image model's workload as JSON bodies. Results: results/scaleout.json and a
table on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_info
from benchmarks.ray_path import RESULTS, measure, serving
from benchmarks.services import running
from ml.config import Settings

BASE_ENV = {"ML_MODELS": "image", "ML_DEVICE": "cpu", "ML_CACHE_ENTRIES": "0",
            "ML_RATE_LIMIT_PER_SECOND": "0", "ML_TORCH_THREADS": "1",
            "ML_IMAGE_NUM_CPUS": "1", "ML_INGRESS_NUM_CPUS": "1"}


def image_bodies(settings: Settings) -> list[bytes]:
    from api import wire
    from ml.registry import Registry

    registry = Registry(settings.replace(models=("image",)))
    model = registry.get("image")
    op = wire.operation("image", registry.model_class("image"))
    return [wire.json_body(op, q) for q in dict.fromkeys(model.workload(64))]


def run(settings: Settings, replicas: list[int], seconds: float,
        per_replica: int = 4) -> dict[str, Any]:
    bodies = image_bodies(settings)
    env = {**BASE_ENV, "ML_CACHE_DIR": str(settings.cache_dir)}
    out: dict[str, Any] = {"machine": machine_info(), "seconds": seconds,
                           "in_flight_per_replica": per_replica, "ray_serve": []}
    with tempfile.TemporaryDirectory() as logs:
        with running("api", env, Path(logs)) as alone:
            found = measure(alone, "/api/predict/image", bodies,
                            concurrency=per_replica * max(replicas), seconds=seconds)
            out["one_process"] = found
            print(f"one process        {found}", flush=True)
        for count in replicas:
            ingress = math.ceil(count / 4)
            scaled = {**env, "ML_IMAGE_MIN_REPLICAS": str(count),
                      "ML_IMAGE_MAX_REPLICAS": str(count),
                      "ML_INGRESS_MIN_REPLICAS": str(ingress),
                      "ML_INGRESS_MAX_REPLICAS": str(ingress)}
            with serving(scaled, Path(logs)) as cluster:
                found = measure(cluster, "/api/predict/image", bodies,
                                concurrency=per_replica * count, seconds=seconds)
            out["ray_serve"].append({"replicas": count, "ingress_replicas": ingress, **found})
            print(f"ray serve x{count:<3}      {found}", flush=True)
    base = out["ray_serve"][0]["throughput_rps"] if out["ray_serve"] else 0
    for row in out["ray_serve"]:
        row["speedup_over_1_replica"] = round(row["throughput_rps"] / base, 2) if base else None
    return out


def table(found: dict[str, Any]) -> str:
    machine = found["machine"]
    one = found["one_process"]
    lines = [f"image model, {machine['cores']} cores ({machine['cpu']}), "
             f"{found['seconds']:g} s per point", "",
             "| serving | replicas | in flight | requests/s | p50 ms | p99 ms | "
             "server CPU ms/request | x 1 replica |", "|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| one process | - | {one['concurrency']} | {one['throughput_rps']:.0f} | "
             f"{one['p50_ms']} | {one['p99_ms']} | {one['server_cpu_ms_per_request']} | - |"]
    for row in found["ray_serve"]:
        lines.append(f"| Ray Serve | {row['replicas']} | {row['concurrency']} | "
                     f"{row['throughput_rps']:.0f} | {row['p50_ms']} | {row['p99_ms']} | "
                     f"{row['server_cpu_ms_per_request']} | {row['speedup_over_1_replica']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "scaleout.json")
    args = parser.parse_args(argv)
    found = run(Settings.from_env(), sorted(args.replicas), args.seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    print(table(found))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
