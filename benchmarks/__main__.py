"""`python -m benchmarks inprocess|run|reliability [options]`.

inprocess: each model's in-process latency. run: every call path side by side (in-process,
HTTP to the one process, microservice hop, and the pinned HTTP floor comparison), results in
benchmarks/results/ and, for a full run, BENCHMARKS.md. pinned: the floor comparison alone."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import harness, report
from benchmarks.machine import machine_info
from ml.config import Settings
from ml.registry import Registry

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the chosen benchmark, write JSON, print a summary."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("benchmark", choices=["inprocess", "run", "pinned", "reliability"])
    parser.add_argument("--quick", action="store_true", help="few iterations (for tests)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--models", nargs="+", default=list(harness.MODELS),
                        choices=harness.MODELS)
    parser.add_argument("--paths", nargs="+", default=list(harness.PATHS),
                        choices=harness.PATHS)
    parser.add_argument("--workers", nargs="*", type=int, default=[1, 2],
                        help="worker counts for the API-only scaling run (none: skip it)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="the image model's device in every measured server (harness)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="where to write BENCHMARKS.md (default: repo root, full runs)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["reliability"]:
        from benchmarks import reliability

        return reliability.main(argv[1:])
    args = parser.parse_args(argv)
    if args.benchmark == "run":
        return run_harness(args)
    if args.benchmark == "pinned":
        return run_pinned(args)

    from benchmarks import inprocess

    before = machine_info()
    registry = Registry(Settings.from_env())
    registry.warmup()
    results = inprocess.run(registry, quick=args.quick)
    record = {"benchmark": args.benchmark, "quick": args.quick, "machine": before,
              "load_after": machine_info()["load_average"], "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.benchmark}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(render(results))
    print(f"\nmachine: {before['cpu']}, {before['cores']} cores, load {before['load_average']}"
          f"{' (BUSY: figures are pessimistic)' if before['busy'] else ''}")
    print(f"written: {path}")
    return 0


def run_harness(args: argparse.Namespace) -> int:
    """Run every call path side by side; write JSON, CSV and (full runs) BENCHMARKS.md."""
    plan = harness.Plan(quick=args.quick, models=tuple(args.models), paths=tuple(args.paths),
                        workers=tuple(args.workers), device=args.device)
    before = machine_info()
    results = harness.run(plan)
    record = {"benchmark": "run", "quick": args.quick, "machine": before,
              "load_after": machine_info()["load_average"], "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "harness-quick" if args.quick else "harness"
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n",
                                          encoding="utf-8")
    (args.out / f"{stem}.csv").write_text(report.csv_text(results), encoding="utf-8")
    markdown_path = args.markdown or (None if args.quick else RESULTS.parent.parent /
                                      "BENCHMARKS.md")
    if markdown_path is not None:
        markdown_path.write_text(report.markdown(record), encoding="utf-8")
        print(f"written: {markdown_path}")
    print(f"written: {args.out / f'{stem}.json'} and .csv")
    return 0


def run_pinned(args: argparse.Namespace) -> int:
    """The HTTP path against the floor alone (also part of `run`); JSON in results/."""
    from benchmarks import pinned

    before = machine_info()
    results = pinned.run(Settings.from_env(), quick=args.quick)
    record = {"benchmark": "pinned", "quick": args.quick, "machine": before,
              "load_after": machine_info()["load_average"], "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"pinned{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print("\n".join(report.pinned_section(results)))
    print(f"written: {path}")
    return 0


def render(results: dict) -> str:  # type: ignore[type-arg]
    """A readable table of the in-process p50/p99 figures."""
    rows = [("sentiment single text (fast path)", results["sentiment"]["single_text"]),
            ("sentiment single text, first sight of its words",
             results["sentiment"]["single_text_first_sight"]),
            ("sentiment single text (sklearn pipeline)",
             results["sentiment"]["sklearn_pipeline_single_text"]),
            ("sentiment batch of 1000 texts", results["sentiment"]["batch_1000_texts"])]
    image = results["image"]
    runtime = f"{image['runtime']} on {image['device']}"
    rows.append((f"image forward, 1 image ({runtime})", image["forward_only"]))
    rows.append(("image decoded->top5", image["decoded_image_end_to_end"]))
    for size in (4, 8):
        rows.append((f"image batch of {size}, per image", image[f"batch_{size}_per_image"]))
    for key, figures in results["recommender"].items():
        rows.append((f"recommender {key.replace('_', ' ')}", figures))
    width = max(len(name) for name, _ in rows)
    lines = [f"{'in-process call':<{width}}  {'p50 ms':>9}  {'p99 ms':>9}  {'n':>6}"]
    lines += [f"{name:<{width}}  {f['p50_ms']:>9.3f}  {f['p99_ms']:>9.3f}  {f['n']:>6}"
              for name, f in rows]
    lines.append(f"sentiment fast path vs sklearn (p50): "
                 f"{results['sentiment']['speedup_vs_sklearn_p50']}x faster")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
