"""`python -m benchmarks.gpu`: the image model on a CUDA GPU, images per second.

Run it on a machine with a GPU (it exits with status 2 when torch sees none). It measures,
in one run: the forward pass alone at several batch sizes, and the whole serving path
(decode on the CPU threads, the engine's micro-batcher, the GPU forward) with batching on
and off under 32 concurrent callers. It checks that CUDA and CPU agree on the golden photos
and writes benchmarks/results/gpu.json with the card's name.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_info
from benchmarks.stats import summarize

RESULTS = Path(__file__).resolve().parent / "results"


def forward_rates(model: Any, sizes: list[int], seconds: float) -> dict[str, Any]:
    """Images/s of the forward pass alone (inputs already on the GPU side of the copy)."""
    import numpy as np
    import torch

    out: dict[str, Any] = {}
    blank = np.random.default_rng(0).random((3, 224, 224), dtype=np.float32)
    for size in sizes:
        batch = [blank] * size
        for _ in range(3):
            model.probabilities(batch)
        torch.cuda.synchronize()
        times: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 5:
            started = time.perf_counter()
            model.probabilities(batch)  # returns numpy: includes the device sync
            times.append(time.perf_counter() - started)
        figures = summarize(times)
        figures["images_per_s"] = round(size / (figures["p50_ms"] / 1e3), 1)
        out[str(size)] = figures
        print(f"forward batch {size:>4}: p50 {figures['p50_ms']:8.3f} ms  "
              f"{figures['images_per_s']:9.1f} images/s")
    return out


def serving_rate(registry: Any, jpeg: bytes, batching: bool, seconds: float,
                 callers: int = 32) -> dict[str, Any]:
    """Images/s through the engine (decode + batcher + forward) with `callers` threads."""
    from ml.engine import Engine
    from ml.image import ImageQuery

    engine = Engine(registry, settings=registry.settings.replace(batching=batching,
                                                                 cache_entries=0))
    query = ImageQuery(jpeg, top_k=5)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    def caller(_: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            engine.predict("image", query)
            latencies.append(time.perf_counter() - started)

    for _ in range(callers):
        engine.predict("image", query)  # warm
    started = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(caller, range(callers)))
    elapsed = time.perf_counter() - started
    sizes = engine.metrics.snapshot()["models"]["image"]["batch_size"]
    engine.close()
    figures = summarize(latencies)
    figures.update({"images_per_s": round(len(latencies) / elapsed, 1), "batch_size": sizes,
                    "callers": callers})
    print(f"serving, batching {'on ' if batching else 'off'}: "
          f"{figures['images_per_s']:8.1f} images/s, p50 {figures['p50_ms']:.2f} ms, "
          f"batch sizes {sizes}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device visible to torch: nothing to measure", file=sys.stderr)
        return 2
    os.environ["ML_DEVICE"] = "cuda"
    from ml.config import Settings
    from ml.registry import Registry
    from ml.samples import sample_photo

    registry = Registry(Settings.from_env().replace(models=("image",), device="cuda"))
    gpu = registry.get("image")
    # the CPU reference is what a CPU server runs: ONNX Runtime
    cpu_registry = Registry(Settings.from_env().replace(models=("image",), device="cpu"))
    cpu = cpu_registry.get("image")
    agreement = {}
    for name in ("coffee", "chelsea"):
        buffer = io.BytesIO()
        sample_photo(name).save(buffer, format="JPEG", quality=92)
        on_gpu = gpu.predict_one(buffer.getvalue())  # type: ignore[attr-defined]
        on_cpu = cpu.predict_one(buffer.getvalue())  # type: ignore[attr-defined]
        agreement[name] = {
            "gpu_top1": on_gpu.predictions[0].label, "cpu_top1": on_cpu.predictions[0].label,
            "max_abs_diff_top5": max(abs(a.confidence - b.confidence) for a, b in
                                     zip(on_gpu.predictions, on_cpu.predictions, strict=True))}
        print(f"{name}: gpu {agreement[name]['gpu_top1']} / cpu {agreement[name]['cpu_top1']}")
    buffer = io.BytesIO()
    sample_photo("coffee").save(buffer, format="JPEG", quality=90)
    record: dict[str, Any] = {
        "benchmark": "gpu", "machine": machine_info(),
        "device": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
        "torch": torch.__version__, "agreement": agreement,
        "forward": forward_rates(gpu, [1, 8, 32, 64, 128], args.seconds),
        "serving_batching_on": serving_rate(registry, buffer.getvalue(), True, args.seconds),
        "serving_batching_off": serving_rate(registry, buffer.getvalue(), False, args.seconds),
    }
    on = record["serving_batching_on"]["images_per_s"]
    off = record["serving_batching_off"]["images_per_s"]
    record["serving_on_over_off"] = round(on / off, 2) if off else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"{record['device']}: serving {on} images/s batched vs {off} unbatched; "
          f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
