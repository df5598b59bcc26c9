"""The serving engine: owns a prediction from query to answer, for every model alike.

Both the REST API and the Streamlit pages predict through one Engine per process, so a
browser user's request and an API call that arrive together share a batch, a queue limit and
a cache. A prediction goes:

    cache lookup -> prepare (validate, decode: off the event loop when the model says it is
    heavy) -> the model's batcher (bounded queue, deadline, one vectorised call) -> the
    answer, cached; queue wait, compute and batch size recorded

`apredict` is the one async path (the API); `predict` takes the same steps in the calling
thread (pages, notebooks, the CLI). `apredict_many`/`predict_many` serve a batch that is
already one: cache hits answered, the rest validated once and run as one call.
Everything the engine knows about a model comes from the model contract (`ml.contract`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from ml.batching import Batcher, Direct, Runner, Timed
from ml.cache import PredictionCache
from ml.config import Settings
from ml.contract import BatchLimits, Model
from ml.errors import DeadlineExceeded, InvalidInput, MLError, Overloaded
from ml.inline import Cost, LoopBatcher
from ml.metrics import Metrics
from ml.registry import Registry, default_registry
from ml.threads import single_threaded_blas


@dataclass(frozen=True)
class Served:
    """A result and how it was made."""

    result: Any
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    batch_size: int = 0
    cached: bool = False


class Engine:
    """Per-model caches and batchers over a registry; the one way predictions are served."""

    def __init__(self, registry: Registry, *, settings: Settings | None = None,
                 metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.settings = settings or registry.settings
        self.metrics = metrics or Metrics()
        self._runners: dict[str, Runner] = {}
        self._costs: dict[str, Cost] = {}  # measured compute per item, per model
        self._loop_batchers: dict[str, LoopBatcher[Any, Any]] = {}
        self._caches: dict[str, PredictionCache] = {}
        self._preparing: Counter[str] = Counter()  # heavy prepares in flight, per model
        self._executor = ThreadPoolExecutor(self.settings.threadpool_size,
                                            thread_name_prefix="engine")
        self._lock = threading.Lock()
        self._closed = False
        single_threaded_blas()  # a serving process gets its parallelism from its requests

    # -- the async path (the API) ------------------------------------------------------------
    async def apredict(self, name: str, query: Any, *, timeout_s: float | None = None
                       ) -> Served:
        """One prediction within `timeout_s` (default ML_REQUEST_TIMEOUT_S): DeadlineExceeded
        past it, Overloaded when the model's queue is full, InvalidInput for bad input."""
        name = self.registry.canonical(name)
        timeout = self.settings.request_timeout_s if timeout_s is None else timeout_s
        model = self.registry.loaded(name)
        if model is not None and (inline := self._inline(name, model)) is not None:
            # nothing on this path waits longer than one loop iteration: no timeout scope
            key, hit = self._lookup(name, model, query)
            return hit or await self._run_inline(name, inline, model.prepare(query), key,
                                                 timeout)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                model = model or await self._off_loop(self.registry.get, name)
                key, hit = self._lookup(name, model, query)
                if hit is not None:
                    return hit
                if model.heavy_prepare:
                    item = await self._heavy_prepare(name, model, query)
                else:
                    item = model.prepare(query)
                left = timeout - (time.perf_counter() - started)
                future = self._submit(name, model, item, key, left)
                await asyncio.wrap_future(future)
                return _served(future)
        except TimeoutError:
            raise DeadlineExceeded(name, timeout) from None

    async def apredict_many(self, name: str, queries: Sequence[Any], *,
                            timeout_s: float | None = None) -> list[Served]:
        """A batch of queries answered as one: see `predict_many`."""
        name = self.registry.canonical(name)
        timeout = self.settings.request_timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout):
                model = self.registry.loaded(name) or await self._off_loop(
                    self.registry.get, name)
                many: list[Served] = await self._off_loop(self._many, name, model, queries)
                return many
        except TimeoutError:
            raise DeadlineExceeded(name, timeout) from None

    # -- the synchronous path (pages, notebooks, the CLI) -------------------------------------
    def predict(self, name: str, query: Any, *, timeout_s: float | None = None) -> Served:
        """`apredict`'s steps in the calling thread."""
        name = self.registry.canonical(name)
        timeout = self.settings.request_timeout_s if timeout_s is None else timeout_s
        started = time.perf_counter()
        model = self.registry.get(name)
        key, hit = self._lookup(name, model, query)
        if hit is not None:
            return hit
        item = model.prepare(query)
        left = timeout - (time.perf_counter() - started)
        future = self._submit(name, model, item, key, left)
        try:
            future.result(timeout=max(0.0, left))
        except FutureTimeout:
            future.cancel()
            raise DeadlineExceeded(name, timeout) from None
        return _served(future)

    def predict_many(self, name: str, queries: Sequence[Any], *,
                     timeout_s: float | None = None) -> list[Served]:
        """A batch that is already one (an upload of texts, /api/predict/batch): cache hits
        answered, the rest validated once and run as one vectorised call on the engine's
        threads. InvalidInput names the first bad query by its index; DeadlineExceeded past
        `timeout_s` (default ML_REQUEST_TIMEOUT_S)."""
        name = self.registry.canonical(name)
        timeout = self.settings.request_timeout_s if timeout_s is None else timeout_s
        work = self._executor.submit(self._many, name, self.registry.get(name), queries)
        try:
            return work.result(timeout=timeout)
        except FutureTimeout:
            work.cancel()
            raise DeadlineExceeded(name, timeout) from None

    # -- steps ----------------------------------------------------------------------------------
    def _lookup(self, name: str, model: Model, query: Any) -> tuple[Hashable | None,
                                                                      Served | None]:
        cache = self.cache(name)
        if not cache.enabled:
            return None, None
        key = model.cache_key(query)
        if key is None:
            return None, None
        result = cache.get(key)
        self.metrics.record_cache(name, hit=result is not None)
        return key, None if result is None else Served(result, cached=True)

    async def _heavy_prepare(self, name: str, model: Model, query: Any) -> Any:
        """Prepare on the engine's threads, admitting no more than the model's queue holds:
        when it is full the request is refused at once instead of decoding what could only
        wait."""
        runner = self.runner(name)
        if self._preparing[name] + runner.queued >= self.batch_limits(name, model).max_queue:
            raise Overloaded(name, retry_after_s=1.0)
        self._preparing[name] += 1
        try:
            return await self._off_loop(model.prepare, query)
        finally:
            self._preparing[name] -= 1

    def _submit(self, name: str, model: Model, item: Any, key: Hashable | None,
                timeout_s: float) -> Timed[Any]:
        future = self.runner(name, model).submit(item, timeout_s=timeout_s)
        cache = self.cache(name) if key is not None else None
        metrics = self.metrics

        def finish(done: Future[Any]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                if not isinstance(error, MLError):
                    metrics.record_model_error(name)
            elif cache is not None:
                cache.put(key, done.result())

        future.add_done_callback(finish)
        return future

    def _many(self, name: str, model: Model, queries: Sequence[Any]) -> list[Served]:
        limit = self.settings.max_batch_texts
        if len(queries) > limit:
            raise InvalidInput(f"the batch holds {len(queries)} items; the limit is {limit}",
                               field="items", limit=limit)
        if not queries:
            raise InvalidInput("the batch holds no items", field="items")
        served: list[Served | None] = [None] * len(queries)
        misses: list[tuple[int, Hashable | None, Any]] = []
        for index, query in enumerate(queries):
            key, hit = self._lookup(name, model, query)
            if hit is not None:
                served[index] = hit
                continue
            try:
                misses.append((index, key, model.prepare(query)))
            except InvalidInput as exc:
                raise InvalidInput(f"item {index}: {exc.message}", **{
                    **exc.details, "field": exc.field, "index": index}) from None
        if misses:
            started = time.perf_counter()
            try:
                results = model.predict([item for _, _, item in misses])
            except Exception:
                self.metrics.record_model_error(name)
                raise
            compute = time.perf_counter() - started
            self.metrics.record_batch(name, [0.0] * len(misses), compute, len(misses))
            cache = self.cache(name)
            for (index, key, _), result in zip(misses, results, strict=True):
                if key is not None:
                    cache.put(key, result)
                served[index] = Served(result, 0.0, round(compute * 1e3, 4), len(misses))
        return served  # type: ignore[return-value]

    def _inline(self, name: str, model: Model) -> LoopBatcher[Any, Any] | None:
        """The model's loop batcher on this loop, if it is measured cheap enough (ml.inline)."""
        budget = self.settings.inline_budget_ms / 1e3
        cost = self._costs.get(name)
        if (cost is None or not cost.inline(budget) or model.heavy_prepare
                or not self.settings.batching):
            return None
        found = self._loop_batchers.get(name)
        if found is None or found.loop is not asyncio.get_running_loop():
            limits = self.batch_limits(name, model)
            found = self._loop_batchers[name] = LoopBatcher(
                model.predict, name=name, cost=cost, budget_s=budget,
                max_batch_size=limits.max_batch, max_queue=limits.max_queue,
                observer=self.metrics.record_batch)
        return found

    async def _run_inline(self, name: str, inline: LoopBatcher[Any, Any], item: Any,
                          key: Hashable | None, timeout_s: float) -> Served:
        try:
            result, wait, compute, size = await inline.submit(item, timeout_s=timeout_s)
        except MLError:
            raise
        except Exception:
            self.metrics.record_model_error(name)
            raise
        if key is not None:
            self.cache(name).put(key, result)
        return Served(result, round(wait * 1e3, 4), round(compute * 1e3, 4), size)

    async def _off_loop(self, call: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    # -- runners, limits, caches --------------------------------------------------------------
    def runner(self, name: str, model: Model | None = None) -> Runner:
        """Model `name`'s batcher (Direct when batching is off), created on first use."""
        found = self._runners.get(name)
        if found is not None:
            return found
        model = model or self.registry.get(name)
        with self._lock:
            if name not in self._runners:
                if self._closed:
                    raise Overloaded(name, retry_after_s=1.0)
                self._runners[name] = self._make_runner(name, model)
            return self._runners[name]

    def _make_runner(self, name: str, model: Model) -> Runner:
        limits = self.batch_limits(name, model)
        cost = self._costs.setdefault(name, Cost(self.settings.inline_budget_ms / 1e3))
        record = self.metrics.record_batch

        def observe(model_name: str, waits: Sequence[float], seconds: float, size: int) -> None:
            cost.add(seconds, size)  # what decides whether the model may run inline
            record(model_name, waits, seconds, size)

        runner: Runner
        if self.settings.batching and limits.max_batch > 1:
            runner = Batcher(model.predict, name=name, max_batch_size=limits.max_batch,
                             max_wait_ms=limits.max_wait_ms, max_queue=limits.max_queue,
                             observer=observe)
        else:
            runner = Direct(model.predict, name=name, workers=self.settings.threadpool_size,
                            max_queue=limits.max_queue, observer=observe)
        self.metrics.watch_queue(name, lambda: runner.queued)
        return runner

    def batch_limits(self, name: str, model: Model | None = None) -> BatchLimits:
        """The model's own batcher limits, with ML_<MODEL>_* settings applied."""
        model = model or self.registry.get(name)
        overrides = self.settings.batch_overrides_for(name)
        base = model.batch_limits
        return BatchLimits(
            max_batch=int(overrides.get("max_batch", base.max_batch)),
            max_wait_ms=float(overrides.get("max_wait_ms", base.max_wait_ms)),
            max_queue=int(overrides.get("max_queue", base.max_queue)))

    def cache(self, name: str) -> PredictionCache:
        """The prediction cache of the model `name` (canonical)."""
        cache = self._caches.get(name)
        if cache is None:
            cache = self._caches.setdefault(name, PredictionCache(self.settings.cache_entries))
        return cache

    # -- reports and lifecycle ----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Per loaded model: queue depth, batching limits and cache counters."""
        out: dict[str, Any] = {}
        for name in self.registry.names():
            model = self.registry.loaded(name)
            if model is None:
                continue
            limits = self.batch_limits(name, model)
            runner = self._runners.get(name)
            out[name] = {
                "batching": bool(self.settings.batching and limits.max_batch > 1),
                "max_batch": limits.max_batch, "max_wait_ms": limits.max_wait_ms,
                "max_queue": limits.max_queue, "queued": runner.queued if runner else 0,
                "cache": self.cache(name).stats(),
            }
        return out

    def clear_cache(self) -> None:
        for cache in self._caches.values():
            cache.clear()

    def close(self) -> None:
        """Finish queued work and stop every batcher."""
        with self._lock:
            self._closed = True
            runners = list(self._runners.values())
        for runner in runners:
            runner.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _served(future: Timed[Any]) -> Served:
    return Served(future.result(), round(future.queue_s * 1e3, 4),
                  round(future.compute_s * 1e3, 4), future.batch_size)


_default: Engine | None = None
_default_lock = threading.Lock()


def default_engine() -> Engine:
    """The process-wide engine over the process-wide registry, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Engine(default_registry())
        return _default
