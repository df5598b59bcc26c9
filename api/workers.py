"""`python -m api.workers --workers N`: the REST API in N processes on one port.

uvicorn's own `--workers` binds one listening socket in the parent and shares it: every
worker waits on the same accept queue, and whichever wakes first takes a whole burst of
connections. With keep-alive clients that often leaves one worker with all of them and the
other idle (measured: 1.0 and 0.0 CPU under 32 connections). Here each worker binds a socket
of its own with SO_REUSEPORT, and the kernel spreads new connections over the listening
sockets by a hash of their addresses, so every worker gets its share.

The parent only supervises: it holds the port (bound, never listening, so it is given no
connections), starts the workers, starts a new one when one dies, and passes SIGTERM/SIGINT
on for a graceful shutdown. With `--workers 1` the API is served in this process, exactly as
`uvicorn api.app:app` would.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE

APP = "api.app:app"
logger = logging.getLogger("api.workers")


@dataclass(frozen=True)
class Options:
    """What every worker is started with (the uvicorn flags `make api` passes)."""

    host: str = "127.0.0.1"
    port: int = 8000
    http: str = "auto"
    access_log: bool = True
    # client addresses come from the socket; X-Forwarded-For is the API's to judge
    # (ML_TRUSTED_PROXIES), not uvicorn's, which believes any loopback client by default
    proxy_headers: bool = False
    log_level: str = "info"
    timeout_graceful_shutdown: int | None = None
    backlog: int = 2048
    ws_max_size: int = 16 * 1024 * 1024
    # the API loads its models in its lifespan: a failure there must stop the server, not
    # be taken (uvicorn's "auto") for an app without lifespan support
    lifespan: str = "on"

    def config(self) -> uvicorn.Config:
        return uvicorn.Config(APP, **asdict(self))


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def serve_worker(options: Options, parent: int) -> None:
    """One worker: its own SO_REUSEPORT socket, then uvicorn. The socket starts listening
    only once the app has loaded its models, so no connection waits on a loading worker.
    If the supervisor dies (even by SIGKILL) the worker shuts down gracefully instead of
    serving on as an orphan."""
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch",
                     daemon=True).start()
    try:
        sock = reuse_port_socket(options.host, options.port)
    except OSError as exc:
        logger.error("cannot bind %s:%s: %s", options.host, options.port, exc)
        sys.exit(STARTUP_FAILURE)
    server = uvicorn.Server(options.config())
    server.run(sockets=[sock])
    if not server.started:  # the app failed to start: it would fail the same way again
        sys.exit(STARTUP_FAILURE)


def _exit_with(parent: int, every_s: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    logger.warning("supervisor %s is gone; shutting down", parent)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's handler: drain, then exit


class Supervisor:
    """Starts `count` workers and keeps that many running until told to stop."""

    poll_s = 0.2
    restart_gap_s = 1.0  # a worker that keeps dying is restarted at most this often

    def __init__(self, options: Options, count: int) -> None:
        self.options = options
        self.count = count
        self.workers: list[BaseProcess] = []
        self.stopping = False
        self._context = multiprocessing.get_context("spawn")

    def _start(self) -> BaseProcess:
        process = self._context.Process(target=serve_worker,
                                        args=(self.options, os.getpid()), name="api-worker")
        process.start()
        logger.info("started worker %s", process.pid)
        return process

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit status."""
        try:  # hold the port: a clash fails here, at once, not in every worker
            guard = reuse_port_socket(self.options.host, self.options.port)
        except OSError as exc:
            logger.error("cannot bind %s:%s: %s", self.options.host, self.options.port, exc)
            return 1
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        status = 0
        with guard:
            self.workers = [self._start() for _ in range(self.count)]
            last_restart = 0.0
            while not self.stopping:
                time.sleep(self.poll_s)
                for index, worker in enumerate(self.workers):
                    if worker.is_alive() or self.stopping:
                        continue
                    if worker.exitcode == STARTUP_FAILURE:  # fails the same way every time
                        logger.error("worker %s failed to start; stopping", worker.pid)
                        self.stopping, status = True, 1
                        break
                    logger.warning("worker %s exited (%s); starting another", worker.pid,
                                   worker.exitcode)
                    time.sleep(max(0.0, last_restart + self.restart_gap_s - time.monotonic()))
                    last_restart = time.monotonic()
                    self.workers[index] = self._start()
            self._shutdown()
        return status

    def _shutdown(self) -> None:
        """SIGTERM every worker (uvicorn drains its requests), then wait; SIGKILL stragglers."""
        for worker in self.workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        grace = (self.options.timeout_graceful_shutdown or 30) + 5
        deadline = time.monotonic() + grace
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                logger.warning("worker %s did not stop in %ss; killing it", worker.pid, grace)
                worker.kill()
                worker.join()


def parse(argv: Sequence[str] | None = None) -> tuple[Options, int]:
    parser = argparse.ArgumentParser(prog="python -m api.workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--http", default="auto", help="uvicorn HTTP protocol (class path)")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument("--no-proxy-headers", dest="proxy_headers", action="store_false",
                        default=False,
                        help="always on: X-Forwarded-For is judged by ML_TRUSTED_PROXIES")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--timeout-graceful-shutdown", type=int, default=None)
    parser.add_argument("--backlog", type=int, default=2048)
    parser.add_argument("--ws-max-size", type=int, default=16 * 1024 * 1024)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    options = Options(host=args.host, port=args.port, http=args.http,
                      access_log=args.access_log, proxy_headers=args.proxy_headers,
                      log_level=args.log_level,
                      timeout_graceful_shutdown=args.timeout_graceful_shutdown,
                      backlog=args.backlog, ws_max_size=args.ws_max_size)
    return options, args.workers


def main(argv: Sequence[str] | None = None) -> int:
    options, workers = parse(argv)
    if workers == 1:
        server = uvicorn.Server(options.config())
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    logging.basicConfig(level=options.log_level.upper(), format="%(levelname)s: %(message)s")
    logger.info("serving %s on http://%s:%s with %s workers (SO_REUSEPORT)", APP,
                options.host, options.port, workers)
    return Supervisor(options, workers).run()


if __name__ == "__main__":
    sys.exit(main())
