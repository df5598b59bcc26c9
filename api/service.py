"""What handlers share: settings, registry, metrics, the model threadpool, lifecycle flags."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import psutil

from api.fetch import ImageFetcher
from api.ratelimit import TokenBuckets
from ml import memory
from ml.config import Settings
from ml.engine import Engine, Served
from ml.errors import DeadlineExceeded, Overloaded
from ml.metrics import Metrics
from ml.registry import Model, Registry

T = TypeVar("T")
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

    def __init__(self, settings: Settings, registry: Registry, metrics: Metrics | None = None,
                 fetcher: ImageFetcher | None = None, engine: Engine | None = None,
                 rate_limits: TokenBuckets | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics or (engine.metrics if engine is not None else Metrics())
        # An engine passed in is shared (with the UI pages); one made here is ours to close.
        self._owns_engine = engine is None
        self.engine = engine or Engine(registry, settings=settings, metrics=self.metrics)
        self.fetcher = fetcher or ImageFetcher(
            max_bytes=settings.max_image_bytes, timeout_s=settings.url_fetch_timeout_s,
            max_redirects=settings.url_fetch_max_redirects, allow=settings.url_fetch_allow)
        self.limiter = anyio.CapacityLimiter(settings.threadpool_size)
        self.large_bodies = asyncio.Lock()  # large JSON bodies are decoded one at a time
        # per API key or client; in the one process the UI pages spend from the same buckets
        self.rate_limits = rate_limits or TokenBuckets(settings.rate_limit_per_second,
                                                       settings.rate_limit_burst)
        self.started = time.time()
        self.warmed = threading.Event()
        self.draining = False
        self._preparing: dict[str, int] = {}  # requests decoding per model (event-loop only)
        self._warmup_thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Begin warming the models in the background; readiness waits for it."""
        memory.return_large_blocks()  # a burst of large requests must not ratchet RSS up
        if not self.settings.warmup:
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
        if self._warmup_thread is not None:
            await anyio.to_thread.run_sync(self._warmup_thread.join, 60.0)
        await self.fetcher.aclose()
        if self._owns_engine:
            await anyio.to_thread.run_sync(self.engine.close)

    def wait_ready(self, timeout: float) -> bool:
        """Block until warm-up finished (for tests and scripts); True if it did in time."""
        return self.warmed.wait(timeout)

    @property
    def ready(self) -> bool:
        """Warm, not draining, and at least one model ready."""
        states = [s.state for s in self.registry.statuses().values()]
        return self.warmed.is_set() and not self.draining and "ready" in states

    # -- model calls ------------------------------------------------------------------------
    async def predict(self, name: str, query: Any, *, timeout_s: float | None = None
                      ) -> Served:
        """One prediction through the engine: cache, then the model's batcher, within the
        deadline. Decoding runs in the threadpool; the event loop only waits."""
        timeout = self.settings.request_timeout_s if timeout_s is None else timeout_s
        engine = self.engine
        key, hit = engine.lookup(name, query)
        if hit is not None:
            return hit
        try:
            async with asyncio.timeout(timeout):
                started = time.perf_counter()
                if engine.recipe(name).prepare_is_heavy or not self.registry.loaded(name):
                    item = await self._prepare_in_thread(name, query)
                else:
                    item = engine.prepare(name, query)
                left = timeout - (time.perf_counter() - started)
                future = engine.submit(name, item, key=key, timeout_s=left)
                await asyncio.wrap_future(future)
                return engine.served(future)
        except TimeoutError:
            raise DeadlineExceeded(name, timeout) from None

    async def _prepare_in_thread(self, name: str, query: Any) -> Any:
        """Decode in the threadpool, admitting no more requests than the model's queue holds:
        when the queue is full, the request is refused at once instead of decoding an image
        that could only wait."""
        if self.registry.loaded(name):
            limit = self.settings.batching_for(name).max_queue
            waiting = self._preparing.get(name, 0) + self.engine.runner(name).queued
            if waiting >= limit:
                raise Overloaded(name, retry_after_s=1.0)
        self._preparing[name] = self._preparing.get(name, 0) + 1
        try:
            return await anyio.to_thread.run_sync(self.engine.prepare, name, query,
                                                  limiter=self.limiter, abandon_on_cancel=True)
        finally:
            self._preparing[name] -= 1

    async def call(self, name: str, work: Callable[[Model], T], *, items: int = 1,
                   timeout_s: float | None = None) -> tuple[T, float]:
        """Run `work(model)` in the model threadpool under the deadline: for calls that are
        a batch already (/api/predict/batch). Returns the result and the compute seconds.
        """
        deadline = self.settings.request_timeout_s if timeout_s is None else timeout_s

        def run() -> tuple[T, float]:
            model = self.registry.get(name)
            started = time.perf_counter()
            try:
                result = work(model)
            except Exception:
                self.metrics.record_model(name, time.perf_counter() - started, ok=False,
                                          items=items)
                raise
            seconds = time.perf_counter() - started
            self.metrics.record_model(name, seconds, items=items)
            return result, seconds

        try:
            with anyio.fail_after(deadline):
                return await anyio.to_thread.run_sync(run, limiter=self.limiter,
                                                      abandon_on_cancel=True)
        except TimeoutError:
            raise DeadlineExceeded(name, deadline) from None

    # -- reports ----------------------------------------------------------------------------
    def health(self, *, internals: bool = True) -> dict[str, Any]:
        """The /health body; `internals` adds the process's and the host's memory."""
        statuses = self.registry.statuses()
        self.metrics.set_model_status(statuses.values())
        states = {name: status.state for name, status in statuses.items()}
        if all(state == "ready" for state in states.values()):
            overall = "healthy"
        elif any(state == "ready" for state in states.values()) or not self.warmed.is_set():
            overall = "degraded"
        else:
            overall = "unhealthy"
        body: dict[str, Any] = {
            "status": overall,
            "uptime": round(time.time() - self.started, 3),
            "models": states,
            "ready": self.ready,
            "draining": self.draining,
        }
        if internals:
            memory = psutil.Process(os.getpid()).memory_info()
            body["memory"] = {
                "rss_mb": round(memory.rss / 2**20, 1), "vms_mb": round(memory.vms / 2**20, 1),
                "system_available_mb": round(psutil.virtual_memory().available / 2**20)}
        return body
