"""Live benchmark runs for the UI: bounded, one at a time per process, in a background
thread, stopping by themselves when nobody is watching.

A run belongs to the page session that started it (the page keeps it in its session
state); others only learn that a run is going. Its HTTP paths go to this very process's
API, found from the process's own listening socket, never from a request's headers.

Every path computes every answer: the prediction cache is off for the run (in this process
and in the hop's model server) and all paths send the same inputs. The run's own requests
are not rate-limited: they carry a secret made for the run, known only to this process and
its load child, which the API's rate limiter accepts (`measuring`) only while the run lasts.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from starlette.types import Scope

from api.config import ApiSettings
from benchmarks.load import LoadResult, inprocess_load
from benchmarks.services import running
from ml import memory
from ml.engine import Engine
from ml.registry import Registry

PATHS = ("in-process", "http", "hop")
PATH_LABELS = {"in-process": "in-process", "http": "HTTP (this server)",
               "hop": "HTTP + microservice hop"}
MAX_SECONDS = 30.0
MAX_CONCURRENCY = 32
IDLE_STOP_S = 5.0
RUN_HEADER = "x-benchmark-run"  # the run's secret, sent by its load child
State = Literal["starting", "running", "done", "stopped", "failed"]


@dataclass
class LiveRun:
    """One run: its settings, the samples so far, and its state."""

    model: str
    paths: tuple[str, ...]
    concurrency: int
    seconds: float
    base_url: str | None
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # the API key, if any
    state: State = "starting"
    message: str = ""
    current: str = ""
    started: float = field(default_factory=time.monotonic)
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    results: dict[str, LoadResult] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def progress(self) -> float:
        return min(1.0, (time.monotonic() - self.started) / (self.seconds * len(self.paths)
                                                                + 1e-9))

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")

    def heartbeat(self) -> None:
        """Called by the page while it shows the run; without it the run stops itself."""
        self.last_seen = time.monotonic()

    def stop(self) -> None:
        """Ask the run to stop after the current request."""
        self._stop.set()

    def stopping(self) -> bool:
        idle = time.monotonic() - self.last_seen > IDLE_STOP_S
        return self._stop.is_set() or idle

    def failures(self) -> dict[str, dict[str, int]]:
        """Per path that had any: what went wrong and how often ("HTTP 429": 3903, ...)."""
        out: dict[str, dict[str, int]] = {}
        for path in self.paths:
            result = self.results.get(path)
            if result is None or not result.errors:
                continue
            found = {f"HTTP {status}": count for status, count in sorted(result.statuses.items())
                     if not 200 <= status < 300}
            other = result.errors - sum(found.values())
            if other > 0:
                found["connection error" if path != "in-process" else "exception"] = other
            out[PATH_LABELS[path]] = found
        return out

    def summary(self) -> list[dict[str, Any]]:
        """Per path: count, throughput, avg/p50/p95/p99 (ms) and, when no request failed,
        the ratio to in-process (a run with errors measured something else)."""
        rows: list[dict[str, Any]] = []
        for path in self.paths:
            latencies = np.array([lat for _, lat in self.samples.get(path, [])]) * 1e3
            if not latencies.size:
                continue
            result = self.results.get(path)
            elapsed = result.elapsed if result else (self.samples[path][-1][0] or 1e-9)
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
            rows.append({"path": PATH_LABELS[path], "requests": int(latencies.size),
                         "requests/s": round(latencies.size / elapsed, 1),
                         "avg ms": round(float(latencies.mean()), 3),
                         "p50 ms": round(float(p50), 3), "p95 ms": round(float(p95), 3),
                         "p99 ms": round(float(p99), 3),
                         "errors": result.errors if result else 0})
        if self.failures():
            return rows
        base = next((r["p50 ms"] for r in rows if r["path"] == PATH_LABELS["in-process"]), None)
        for row in rows:
            row["vs in-process (p50)"] = f"{row['p50 ms'] / base:.1f}x" if base else "-"
        return rows


_lock = threading.Lock()
_active: LiveRun | None = None


class RunInProgress(Exception):
    """Raised when a run is requested while another one is still going."""


def active_run() -> LiveRun | None:
    """The run going on in this process now, whoever started it."""
    run = _active
    return run if run is not None and run.active else None


def measuring(scope: Scope) -> bool:
    """Whether a request is the active run's own measurement traffic: it carries the run's
    secret, and the run is still going (a token from a finished run is worth nothing)."""
    run = _active
    if run is None or not run.active:
        return False
    wanted = RUN_HEADER.encode()
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return hmac.compare_digest(value, run.token.encode())
    return False


def start(registry: Registry, *, model: str, paths: tuple[str, ...], concurrency: int,
          seconds: float, base_url: str | None,
          headers: dict[str, str] | None = None, engine: Engine | None = None) -> LiveRun:
    """Start a bounded run in the background; RunInProgress if one is going. `engine` is
    the one the HTTP path is served by: its cache for the model is off during the run."""
    global _active
    if model not in registry.names() or not paths or any(p not in PATHS for p in paths):
        raise ValueError("unknown model or call path")
    run = LiveRun(model=model, paths=tuple(paths),
                  concurrency=max(1, min(int(concurrency), MAX_CONCURRENCY)),
                  seconds=max(0.5, min(float(seconds), MAX_SECONDS)), base_url=base_url,
                  headers=dict(headers or {}))
    with _lock:
        if active_run() is not None:
            raise RunInProgress("a benchmark run is already going; wait for it to finish")
        _active = run
    threading.Thread(target=_execute, args=(run, registry, engine), name="live-benchmark",
                     daemon=True).start()
    return run


def _execute(run: LiveRun, registry: Registry, engine: Engine | None) -> None:
    try:
        inputs = _inputs(registry, run.model)
        no_cache = (engine.cache(run.model).paused() if engine is not None
                    else contextlib.nullcontext())
        with no_cache, _hop(run, registry) as hop_url:
            run.state = "running"
            for path in run.paths:
                if run.stopping():
                    break
                run.current = path
                samples = run.samples.setdefault(path, [])

                def on_sample(t: float, latency: float,
                              samples: list[tuple[float, float]] = samples) -> None:
                    samples.append((t, latency))
                if path == "in-process":
                    call, items = inputs["call"]
                    run.results[path] = inprocess_load(call, items, concurrency=run.concurrency,
                                                       requests=10**9, seconds=run.seconds,
                                                       on_sample=on_sample, stop=run.stopping,
                                                       yield_between=True)
                else:
                    url = run.base_url if path == "http" else hop_url
                    if url is None:
                        continue
                    route = f"/api/predict/{run.model}"
                    secret = {RUN_HEADER: run.token} if path == "http" else {}
                    run.results[path] = _http_in_child(run, url, route, inputs["bodies"],
                                                       on_sample, secret)
        run.state = "stopped" if run.stopping() else "done"
    except Exception as exc:  # noqa: BLE001 - reported on the page, never raised into it
        run.state, run.message = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        release(run)


def release(run: LiveRun) -> None:
    """A finished run keeps only what the page shows: the samples, not the load results'
    own copy of every latency; and what the run allocated goes back to the OS (without
    this a long-running UI grew by ~10 MiB a run; see tests/views/test_browser.py)."""
    for result in run.results.values():
        result.latencies = []
    memory.trim()


def _http_in_child(run: LiveRun, url: str, route: str, bodies: list[bytes],
                   on_sample: Callable[[float, float], None],
                   secret: dict[str, str]) -> LoadResult:
    """HTTP load from a child process: a client thread inside the measured server would
    fight it for the GIL and inflate its latencies."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump([json.loads(b) for b in bodies], handle)
    command = [sys.executable, "-m", "benchmarks.loadgen", url, route, handle.name,
               "--concurrency", str(run.concurrency), "--seconds", str(run.seconds)]
    result = LoadResult()
    env = {**os.environ, "LOADGEN_HEADERS": json.dumps({**run.headers, **secret})}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1]) as process:
        try:
            _read_samples(process, run, result, on_sample)
        finally:
            if process.poll() is None:
                process.terminate()
            process.wait(10)
            Path(handle.name).unlink(missing_ok=True)
    return result


def _read_samples(process: subprocess.Popen[str], run: LiveRun, result: LoadResult,
                  on_sample: Callable[[float, float], None]) -> None:
    """The load child's samples as they arrive, and its summary at the end."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("SUMMARY "):
            summary = json.loads(line[8:])
            result.elapsed, result.errors = summary["elapsed"], summary["errors"]
            result.client_cpu = summary["client_cpu"]
            result.statuses = {int(k): v for k, v in summary["statuses"].items()}
            continue
        t, latency = (float(x) for x in line.split())
        result.latencies.append(latency)
        on_sample(t, latency)
        if run.stopping():
            process.terminate()
            return


@contextlib.contextmanager
def _hop(run: LiveRun, registry: Registry) -> Iterator[str | None]:
    """A model server and a front for the hop path, started for this run only."""
    if "hop" not in run.paths:
        yield None
        return
    run.message = "starting the model-server and front processes..."
    env = {"ML_CACHE_DIR": str(registry.settings.cache_dir), "ML_MODELS": run.model,
           "ML_RATE_LIMIT_PER_SECOND": "0", "ML_DEVICE": "cpu",
           "ML_CACHE_ENTRIES": "0"}
    with tempfile.TemporaryDirectory() as logs, \
            running("api", env, Path(logs)) as model_server, \
            running("hop", {"HOP_TARGETS": json.dumps({run.model: model_server.url})},
                    Path(logs)) as front:
        run.message = ""
        yield front.url


def _inputs(registry: Registry, model: str) -> dict[str, Any]:
    """The model's own workload, the same on every path: called directly in-process, and
    as HTTP bodies in the same order."""
    from api import wire
    from ml.contract import call

    found = registry.get(model)
    queries = found.workload(200)
    op = wire.operation(model, registry.model_class(model))
    return {"call": (lambda query: call(found, query), queries),
            "bodies": [wire.json_body(op, q) for q in queries]}


def may_run(settings: ApiSettings, key: str | None, *, public: bool) -> tuple[bool, str]:
    """Whether a visitor may start live runs, and if not, why.

    Runs load the server, so they are the operator's: off with ML_UI_BENCHMARKS=off; with
    API keys configured, only for a visitor who gives one; without keys, on for a server
    that listens on loopback only (or with ML_UI_BENCHMARKS=on), off for a public one."""
    if settings.ui_benchmarks == "off":
        return False, "Live runs are turned off on this server (ML_UI_BENCHMARKS=off)."
    if settings.api_keys:
        if not key:
            return False, "Enter an API key to start live runs."
        if not any(hmac.compare_digest(key.encode(), k.encode()) for k in settings.api_keys):
            return False, "That is not one of this server's API keys."
        return True, ""
    if settings.ui_benchmarks == "auto" and public:
        return False, ("This server is public, so live runs are off: its operator can set "
                       "API keys (ML_API_KEYS) or ML_UI_BENCHMARKS=on.")
    return True, ""


def _own_listening() -> list[tuple[str, int]]:
    """(address, port) of every TCP socket this process listens on."""
    import psutil

    return [(c.laddr.ip, c.laddr.port) for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN]


def listens_publicly() -> bool:
    """True if this process listens on any address other than loopback."""
    import ipaddress

    return any(not ipaddress.ip_address(address).is_loopback
               for address, _ in _own_listening())


def local_api_url(timeout_s: float = 1.0) -> str | None:
    """This process's own API, if it serves one: found from the sockets the process itself
    listens on (known at start-up, whatever a request's Host or Forwarded headers claim),
    and checked to answer /health/live as the API does."""
    import httpx

    for address, port in _own_listening():
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        try:
            answer = httpx.get(f"{url}/health/live", timeout=timeout_s)
            if answer.status_code == 200 and answer.json() == {"status": "alive"}:
                return url
        except (httpx.HTTPError, ValueError):
            continue
    return None
