"""Load generators: a minimal asyncio HTTP/1.1 keep-alive client and an in-process one.

The HTTP client is hand-rolled (prebuilt request bytes, Content-Length framing) so that it
costs far less CPU per request than the servers it measures; its own CPU time is reported
with every result so a reader can check it was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_SECONDS = 120.0  # hard cap on any single load run


@dataclass
class LoadResult:
    """What one load run measured."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # connection failures and non-2xx answers
    elapsed: float = 0.0
    client_cpu: float = 0.0  # seconds of CPU the load client itself used
    samples: list[tuple[float, float]] = field(default_factory=list)  # (t, latency) for charts
    refused: list[float] = field(default_factory=list)  # seconds, answered non-2xx
    sent: int = 0  # requests written to a connection

    @property
    def answered(self) -> int:
        """Requests that got a complete HTTP response (any status)."""
        return sum(self.statuses.values())

    @property
    def count(self) -> int:
        return len(self.latencies) + self.errors

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


def request_bytes(url: str, path: str, body: bytes,
                  headers: Mapping[str, str] | None = None) -> bytes:
    """A complete keep-alive POST request."""
    host = urlsplit(url).netloc
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: keep-alive\r\n\r\n")
    return head.encode() + body


async def _worker(url: str, payloads: Sequence[bytes], result: LoadResult, budget: list[int],
                  deadline: float, started: float, on_sample: Callable[[float, float], None] | None,
                  stop: Callable[[], bool]) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    index = 0
    try:
        while budget[0] > 0 and time.perf_counter() < deadline and not stop():
            budget[0] -= 1
            payload = payloads[index % len(payloads)]
            index += 1
            sent = time.perf_counter()
            result.sent += 1
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latency = time.perf_counter() - sent
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                result.latencies.append(latency)
                result.samples.append((sent - started, latency))
                if on_sample is not None:
                    on_sample(sent - started, latency)
            else:
                result.errors += 1
                result.refused.append(latency)
            if head.lower().find(b"connection: close") >= 0:
                writer.close()
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        result.errors += 1
    finally:
        writer.close()


def http_load(url: str, path: str, bodies: Sequence[bytes], *, concurrency: int,
              requests: int, seconds: float = MAX_SECONDS,
              on_sample: Callable[[float, float], None] | None = None,
              stop: Callable[[], bool] = lambda: False,
              headers: Mapping[str, str] | None = None) -> LoadResult:
    """Send up to `requests` POSTs over `concurrency` keep-alive connections, for at most
    `seconds` (and never more than MAX_SECONDS), or until `stop()` is true."""
    payloads = [request_bytes(url, path, body, headers) for body in bodies]
    result = LoadResult()
    budget = [requests]

    async def main() -> None:
        started = time.perf_counter()
        deadline = started + min(seconds, MAX_SECONDS)
        await asyncio.gather(*(_worker(url, payloads, result, budget, deadline, started,
                                       on_sample, stop) for _ in range(concurrency)))
        result.elapsed = time.perf_counter() - started

    cpu = time.process_time()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())
    result.client_cpu = time.process_time() - cpu
    return result


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where installed (it is a serving dependency): a client that
    turns responses around sooner keeps the measured server busier, not itself."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def inprocess_load(call: Callable[[Any], object], inputs: Sequence[Any], *, concurrency: int,
                   requests: int, seconds: float = MAX_SECONDS,
                   on_sample: Callable[[float, float], None] | None = None,
                   stop: Callable[[], bool] = lambda: False,
                   yield_between: bool = False) -> LoadResult:
    """Call `call(input)` from `concurrency` threads, bounded like http_load. With
    `yield_between`, each thread gives up the GIL after every call: a load inside a serving
    process (the UI's live runs) must not starve its other threads, which a model in pure
    Python would otherwise do (a page load there took 12-20 s instead of 0.2 s)."""
    result = LoadResult()
    budget = [requests]
    started = time.perf_counter()
    deadline = started + min(seconds, MAX_SECONDS)

    def worker(offset: int) -> None:
        index = offset
        while time.perf_counter() < deadline and not stop():
            if budget[0] <= 0:
                return
            budget[0] -= 1
            item = inputs[index % len(inputs)]
            index += concurrency
            sent = time.perf_counter()
            try:
                call(item)
            except Exception:  # noqa: BLE001 - counted, not raised: the run goes on
                result.errors += 1
                continue
            latency = time.perf_counter() - sent
            result.latencies.append(latency)
            result.samples.append((sent - started, latency))
            if on_sample is not None:
                on_sample(sent - started, latency)
            if yield_between:
                time.sleep(0)

    cpu = time.process_time()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    result.elapsed = time.perf_counter() - started
    result.client_cpu = time.process_time() - cpu
    result.statuses = {200: len(result.latencies)}
    return result


# -- wrk ----------------------------------------------------------------------------------------

# wrk's Lua hooks: cycle through the bodies; at the end print one JSON line with the exact
# percentiles from wrk's own latency histogram (microseconds) and its error counts.
_WRK_SCRIPT = """
local bodies = {%(bodies)s}
local headers = {["Content-Type"] = "application/json"%(headers)s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", %(path)s, headers, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, '
    .. '"avg_us": %%.1f, "min_us": %%d, "p50_us": %%d, "p95_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency.mean, latency.min, latency:percentile(50), latency:percentile(95),
    latency:percentile(99)))
end
"""


def _lua_string(data: bytes) -> str:
    """`data` as a Lua long-bracket string literal (no escapes needed inside)."""
    text = data.decode()
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def pinned(cpus: str | None) -> list[str]:
    """The command prefix that runs a process on `cpus` only ("0", "1"): `taskset -c`,
    where the machine has those cores and taskset; nothing otherwise."""
    if cpus is None or shutil.which("taskset") is None:
        return []
    wanted = {int(c) for c in cpus.split(",")}
    return ["taskset", "-c", cpus] if wanted <= os.sched_getaffinity(0) else []


def wrk_version() -> str | None:
    """wrk's version string, or None where it is not installed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10,
                          check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def wrk_load(url: str, path: str, bodies: Sequence[bytes], *, concurrency: int,
             seconds: float, headers: Mapping[str, str] | None = None,
             cpus: str | None = None) -> dict[str, Any]:
    """POST `bodies` (cycled) for `seconds` over `concurrency` keep-alive connections from
    one wrk thread; a summary shaped like `stats.summarize` plus throughput and errors.

    wrk is a C load generator: per request it costs a small fraction of the CPU of the
    Python client, which matters on a 2-core machine where the client shares the cores
    with the server it measures (its CPU share is reported)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise FileNotFoundError("wrk is not installed (apt-get install wrk)")
    seconds = min(seconds, MAX_SECONDS)
    extra = "".join(f", [ {_lua_string(k.encode())} ] = {_lua_string(v.encode())}"
                    for k, v in (headers or {}).items())
    script = _WRK_SCRIPT % {"bodies": ", ".join(_lua_string(b) for b in bodies),
                            "path": _lua_string(path.encode()), "headers": extra}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            [*pinned(cpus), wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
             "--timeout", "10s", "-s", lua.name, url],
            capture_output=True, text=True, timeout=seconds + 30, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    raw = json.loads(line[4:])
    elapsed = raw["duration_us"] / 1e6
    answered = raw["requests"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    ok = answered - raw["non_2xx"]
    return {"n": answered, "avg_ms": round(raw["avg_us"] / 1e3, 4),
            "p50_ms": round(raw["p50_us"] / 1e3, 4), "p95_ms": round(raw["p95_us"] / 1e3, 4),
            "p99_ms": round(raw["p99_us"] / 1e3, 4), "min_ms": round(raw["min_us"] / 1e3, 4),
            "throughput_rps": round(ok / elapsed, 1) if elapsed else 0.0,
            "errors": raw["non_2xx"] + raw["socket_errors"], "elapsed_s": round(elapsed, 3),
            "client_cpu_share": round(cpu / elapsed, 3) if elapsed else 0.0}
