"""Server processes on 127.0.0.1 for benchmarks and tests: start, wait until ready, measure,
stop by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.load import pinned

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _peak_rss_mb(pid: int) -> float:
    """Peak resident memory of process `pid` so far (VmHWM), in MiB."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


@dataclass
class Server:
    """A running server process."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the process so far (VmHWM), in MiB; with worker
        processes, the sum over the parent and its children."""
        import psutil

        children = psutil.Process(self.process.pid).children(recursive=True)
        return _peak_rss_mb(self.process.pid) + sum(_peak_rss_mb(c.pid) for c in children)

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used."""
        import psutil

        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait; SIGKILL if it will not go. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(10)


# The uvicorn flags of `make run` / `make api` (Makefile): the API writes its own JSON access
# log; the guarded protocol bounds request heads and unread responses; X-Forwarded-For is
# judged by the API (ML_TRUSTED_PROXIES), not by uvicorn.
SERVING_FLAGS = ("--no-access-log", "--no-proxy-headers", "--timeout-graceful-shutdown", "20",
                 "--http", "api.protocol:GuardedHttpToolsProtocol", "--ws-max-size", "8388608")


def command(mode: str, port: int) -> list[str]:
    """The command line of each serving mode."""
    if mode == "hop":
        return [sys.executable, "-m", "uvicorn", "benchmarks.hop:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                "--no-proxy-headers", "--log-level", "warning"]
    if mode == "fastapi-peer":
        return [sys.executable, "-m", "uvicorn", "benchmarks.peer_fastapi:create_app",
                "--factory", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                "--no-proxy-headers", "--log-level", "warning"]
    if mode == "api" or mode.startswith("api-workers-"):  # `make api [WORKERS=n]`
        workers = mode.rsplit("-", 1)[1] if mode != "api" else "1"
        return [sys.executable, "-m", "api.workers", "--host", "127.0.0.1", "--port",
                str(port), "--workers", workers, *SERVING_FLAGS]
    if mode == "floor":  # the HTTP floor: a bare ASGI app under the same flags
        return [sys.executable, "-m", "uvicorn", "benchmarks.floor:app", "--host",
                "127.0.0.1", "--port", str(port), *SERVING_FLAGS]
    if mode == "one-process":  # what `make run` runs
        return [sys.executable, "-m", "uvicorn", "server:app", "--host", "127.0.0.1",
                "--port", str(port), *SERVING_FLAGS]
    if mode == "ui-only":  # Streamlit Community Cloud's default: the UI alone
        return [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port",
                str(port), "--server.address", "127.0.0.1", "--server.headless", "true"]
    if mode == "streamlit-run":  # what Streamlit Community Cloud runs
        return [sys.executable, "-m", "streamlit", "run", "server.py", "--server.port",
                str(port), "--server.address", "127.0.0.1", "--server.headless", "true"]
    raise ValueError(mode)


def command_env(mode: str) -> dict[str, str]:
    """Environment a serving mode needs on top of its command line. `streamlit run` builds
    its uvicorn config with proxy headers on and no flag to turn them off; uvicorn then
    believes X-Forwarded-For from any loopback client unless FORWARDED_ALLOW_IPS trusts
    nobody."""
    return {"FORWARDED_ALLOW_IPS": ""} if mode in ("ui-only", "streamlit-run") else {}


def wait_ready(server: Server, probe: str, timeout: float, *, needed: int = 1,
               interval: float = 0.25, what: str = "server") -> None:
    """Until `needed` fresh requests in a row to `probe` answer 200; RuntimeError with the
    log's tail if the process exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{server.log.read_text()[-3000:]}")
        ready = 0
        with contextlib.suppress(httpx.HTTPError):
            while ready < needed and \
                    httpx.get(f"{server.url}{probe}", timeout=2).status_code == 200:
                ready += 1
        if ready >= needed:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready in {timeout}s:\n"
                               f"{server.log.read_text()[-3000:]}")
        time.sleep(interval)


@contextmanager
def running(mode: str, env: Mapping[str, str], log_dir: Path,
            ready_timeout: float = 180.0, cpus: str | None = None) -> Iterator[Server]:
    """A server of `mode` with extra `env`, ready (warmed up) before it is yielded; pinned
    to `cpus` ("0") where the machine allows (benchmarks.load.pinned)."""
    port = free_port()
    log = log_dir / f"{mode}-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env, **command_env(mode)}
    with open(log, "wb") as out:
        process = subprocess.Popen([*pinned(cpus), *command(mode, port)], cwd=ROOT,
                                   env=full_env, stdout=out,
                                   stderr=subprocess.STDOUT)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        # several workers share the port: wait until fresh connections keep finding ready ones
        wait_ready(server, {"ui-only": "/_stcore/health", "floor": "/"}.get(mode, "/health/ready"),
                   ready_timeout, needed=20 if mode.startswith("api-workers-") else 1)
        yield server
    finally:
        server.stop()
