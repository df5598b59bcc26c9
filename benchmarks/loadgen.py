"""`python -m benchmarks.loadgen URL ROUTE BODIES.json --concurrency N --seconds S`.

Runs http_load in its own process (so it never competes with the measured server for a
GIL) and prints one line per answered request, "t latency status", then a JSON summary.
Extra request headers (an API key) come as a JSON object in LOADGEN_HEADERS, so that they
never show in the process list."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.load import http_load


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the load, stream samples to stdout."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    parser.add_argument("url")
    parser.add_argument("route")
    parser.add_argument("bodies", type=Path, help="JSON list of request bodies")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--requests", type=int, default=10**9)
    args = parser.parse_args(argv)
    bodies = [json.dumps(b).encode() for b in json.loads(args.bodies.read_text())]
    out = sys.stdout

    def on_sample(t: float, latency: float) -> None:
        out.write(f"{t:.6f} {latency:.9f}\n")

    result = http_load(args.url, args.route, bodies, concurrency=args.concurrency,
                       requests=args.requests, seconds=args.seconds, on_sample=on_sample,
                       headers=json.loads(os.environ.get("LOADGEN_HEADERS") or "{}"))
    out.write("SUMMARY " + json.dumps({"elapsed": result.elapsed, "errors": result.errors,
                                       "statuses": result.statuses,
                                       "client_cpu": result.client_cpu}) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
