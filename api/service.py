"""One API instance's lifecycle and shared state: warm-up, readiness, drain on signals;
the engine it serves from, the URL fetcher, rate-limit buckets, HTTP metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import psutil
from starlette.types import Scope

from api.access import AccessLog
from api.config import ApiSettings
from api.fetch import ImageFetcher
from api.metrics import HttpMetrics
from api.ratelimit import TokenBuckets, shared_buckets
from api.schemas import HealthResponse
from ml import memory
from ml.engine import Engine
from ml.registry import Registry

logger = logging.getLogger("api")


def freeze_heap() -> None:
    """Move everything alive after warm-up (models, libraries, the UI framework: millions of
    objects) out of the garbage collector's view. Without this, each full collection walks
    them all and stalls every request in the process for ~300 ms (measured at c=32).
    What warm-up left free goes back to the OS."""
    gc.collect()
    gc.freeze()
    memory.trim()


class Service:
    """The state of one API instance; built by create_app, started by the lifespan."""

    def __init__(self, settings: ApiSettings, engine: Engine, *, owns_engine: bool = False,
                 fetcher: ImageFetcher | None = None,
                 rate_limits: TokenBuckets | None = None,
                 rate_limit_exempt: Callable[[Scope], bool] | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.registry: Registry = engine.registry
        self.metrics = engine.metrics
        self.http_metrics = HttpMetrics.of(engine.metrics)
        self.access = AccessLog(enabled=settings.access_log)
        # an engine passed in may be shared (with the UI pages); one made for us is ours
        self._owns_engine = owns_engine
        self.fetcher = fetcher or ImageFetcher(
            max_bytes=engine.settings.max_image_bytes, timeout_s=settings.url_fetch_timeout_s,
            max_redirects=settings.url_fetch_max_redirects, allow=settings.url_fetch_allow)
        self.large_bodies = asyncio.Lock()  # large JSON bodies are decoded one at a time
        # per API key or client; in the one process the UI pages spend from the same buckets
        self.rate_limits = rate_limits or shared_buckets(settings)  # Redis if configured
        self.rate_limit_exempt = rate_limit_exempt  # requests that spend no token (see RateLimit)
        self.started = time.time()
        self.warmed = threading.Event()
        self.draining = False
        self._warmup_thread: threading.Thread | None = None

    @classmethod
    def over(cls, registry: Registry, settings: ApiSettings | None = None) -> Service:
        """A service with an engine of its own over `registry`."""
        return cls(settings or ApiSettings.from_env(), Engine(registry), owns_engine=True)

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Begin warming the models in the background; readiness waits for it."""
        memory.return_large_blocks()  # a burst of large requests must not ratchet RSS up
        if not self.engine.settings.warmup:
            self.warmed.set()
            return
        if self._warmup_thread is None:
            self._warmup_thread = threading.Thread(target=self._warm, name="warmup",
                                                   daemon=True)
            self._warmup_thread.start()

    def _warm(self) -> None:
        started = time.perf_counter()
        statuses = self.registry.warmup()
        self.metrics.set_model_status(statuses.values())
        freeze_heap()
        logger.info("warm-up finished in %.1fs: %s", time.perf_counter() - started,
                    {n: s.state for n, s in statuses.items()})
        self.warmed.set()

    def drain_on_signals(self) -> Callable[[], None]:
        """Flip to draining as soon as SIGTERM/SIGINT arrives, then let the server's own
        handler shut down as usual. Returns a function restoring the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            self.draining = True
            logger.info("signal %s: draining (readiness now 503)", signum)
            chained = previous.get(signum)
            if callable(chained):
                chained(signum, frame)
            elif chained == signal.SIG_DFL:
                signal.default_int_handler(signum, frame)

        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, handler)

        def restore() -> None:
            for signum, old in previous.items():
                if signal.getsignal(signum) is handler:
                    signal.signal(signum, old)
        return restore

    async def stop(self) -> None:
        """Refuse readiness, let a running warm-up finish, release the fetcher's connections."""
        self.draining = True
        self.access.flush()
        loop = asyncio.get_running_loop()
        if self._warmup_thread is not None:
            await loop.run_in_executor(None, self._warmup_thread.join, 60.0)
        await self.fetcher.aclose()
        if self._owns_engine:
            await loop.run_in_executor(None, self.engine.close)

    def wait_ready(self, timeout: float) -> bool:
        """Block until warm-up finished (for tests and scripts); True if it did in time."""
        return self.warmed.wait(timeout)

    @property
    def ready(self) -> bool:
        """Warm, not draining, and at least one model ready."""
        states = [s.state for s in self.registry.statuses().values()]
        return self.warmed.is_set() and not self.draining and "ready" in states

    # -- reports ----------------------------------------------------------------------------
    def health(self, *, internals: bool = True) -> HealthResponse:
        """The /health body; `internals` adds the process's and the host's memory."""
        statuses = self.registry.statuses()
        self.metrics.set_model_status(statuses.values())
        states = {name: status.state for name, status in statuses.items()}
        overall: Literal["healthy", "degraded", "unhealthy"]
        if all(state == "ready" for state in states.values()):
            overall = "healthy"
        elif any(state == "ready" for state in states.values()) or not self.warmed.is_set():
            overall = "degraded"
        else:
            overall = "unhealthy"
        memory = None
        if internals:
            memory_info = psutil.Process(os.getpid()).memory_info()
            memory = {"rss_mb": round(memory_info.rss / 2**20, 1),
                      "vms_mb": round(memory_info.vms / 2**20, 1),
                      "system_available_mb": round(psutil.virtual_memory().available / 2**20)}
        return HealthResponse(overall, round(time.time() - self.started, 3), states,
                              self.ready, self.draining, memory)
