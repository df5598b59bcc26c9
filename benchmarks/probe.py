"""`python -m benchmarks.probe URL [--path /health/live] [--interval 0.02] [--seconds N]`.

Asks the server for `path` every `interval` seconds over one keep-alive connection and
prints "wall_time latency_s status" per answer (status 0: no answer within a second, then
a fresh connection). Run in a process of its own, so that what it measures is the server's
event loop, not the GIL of whoever is attacking it. Stops after `seconds` or on EOF/SIGTERM.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
from collections.abc import Sequence
from urllib.parse import urlsplit


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe")
    parser.add_argument("url")
    parser.add_argument("--path", default="/health/live")
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--source", default="127.0.0.1", help="local address to send from")
    args = parser.parse_args(argv)
    parts = urlsplit(args.url)
    deadline = time.monotonic() + min(args.seconds, 3600.0)
    connection: http.client.HTTPConnection | None = None
    while time.monotonic() < deadline:
        if connection is None:
            connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                                    timeout=1.0,
                                                    source_address=(args.source, 0))
        started = time.perf_counter()
        status = 0
        try:
            connection.request("GET", args.path)
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = None
        latency = time.perf_counter() - started
        sys.stdout.write(f"{time.time():.4f} {latency:.6f} {status}\n")
        sys.stdout.flush()
        time.sleep(max(0.0, args.interval - latency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
