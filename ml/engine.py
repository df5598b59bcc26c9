"""The serving engine: a prediction cache and a micro-batcher in front of every model.

Both the REST API and the Streamlit pages predict through one Engine per process, so a
browser user's request and an API call that arrive together share a batch, a queue limit and
a cache. A prediction goes:

    lookup (cache) -> prepare (validate/decode: the caller's thread) -> submit (the model's
    batcher: queue, deadline, one vectorised call) -> result, stored in the cache

`predict()` does all of it synchronously; the API calls the steps itself so that it can keep
the event loop free (prepare in a thread for images, await the future).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import astuple, dataclass
from typing import Any

from ml.batching import Batcher, Direct, Runner, Timed
from ml.cache import PredictionCache
from ml.config import BatchLimits, Settings
from ml.errors import MLError, Overloaded
from ml.metrics import Metrics
from ml.registry import Model, Registry, default_registry


@dataclass(frozen=True)
class TextQuery:
    """A sentiment request."""

    text: str
    detailed: bool = False


@dataclass(frozen=True)
class ImageQuery:
    """An image classification request: encoded image bytes."""

    data: bytes
    top_k: int = 5


@dataclass(frozen=True)
class Served:
    """A result and how it was made."""

    result: Any
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    batch_size: int = 0
    cached: bool = False


@dataclass(frozen=True)
class Recipe:
    """How one model's queries become cache keys, batch items and one vectorised call."""

    key: Callable[[Any], Hashable | None]
    prepare: Callable[[Model, Any], Any]  # query -> item; raises InvalidInput
    run: Callable[[Model, list[Any]], Sequence[Any]]
    prepare_is_heavy: bool = False  # decode work: keep it off an event loop


def _sentiment_run(model: Any, items: list[tuple[str, bool]]) -> list[Any]:
    results: list[Any] = [None] * len(items)
    for detailed in (False, True):
        picked = [i for i, (_, d) in enumerate(items) if d is detailed]
        if picked:
            out = model.predict([items[i][0] for i in picked], detailed=detailed)
            for i, result in zip(picked, out, strict=True):
                results[i] = result
    return results


def _image_key(query: ImageQuery) -> Hashable:
    return ("image", hashlib.blake2b(query.data, digest_size=20).digest(), query.top_k)


def _image_prepare(model: Any, query: ImageQuery) -> tuple[Any, int]:
    from ml.image import validate_top_k

    return model.prepare(query.data), validate_top_k(query.top_k)


def _image_run(model: Any, items: list[tuple[Any, int]]) -> list[Any]:
    return list(model.classify([p for p, _ in items], top_k=[k for _, k in items]))


def _recommend_key(query: Any) -> Hashable:
    return ("recommend", *astuple(query))


GENERIC = Recipe(key=lambda q: None, prepare=lambda m, q: q,
                 run=lambda m, items: m.predict(items))
RECIPES: dict[str, Recipe] = {
    "sentiment": Recipe(key=lambda q: ("text", q.text, q.detailed),
                        prepare=lambda m, q: (m.validate(q.text), q.detailed),  # type: ignore[attr-defined]
                        run=_sentiment_run),
    "image": Recipe(key=_image_key, prepare=_image_prepare, run=_image_run,
                    prepare_is_heavy=True),
    "recommender": dataclasses.replace(GENERIC, key=_recommend_key),
}


class Engine:
    """Per-model caches and batchers over a registry; the one way predictions are served."""

    def __init__(self, registry: Registry, *, settings: Settings | None = None,
                 metrics: Metrics | None = None) -> None:
        self.registry = registry
        self.settings = settings or registry.settings
        self.metrics = metrics or Metrics()
        self._runners: dict[str, Runner] = {}
        self._caches = {name: PredictionCache(self.settings.cache_entries)
                        for name in registry.names()}
        self._lock = threading.Lock()
        self._closed = False

    def recipe(self, name: str) -> Recipe:
        return RECIPES.get(name, GENERIC)

    # -- the steps ------------------------------------------------------------------------
    def lookup(self, name: str, query: Any) -> tuple[Hashable | None, Served | None]:
        """The query's cache key, and its cached result if there is one."""
        key = self.recipe(name).key(query)
        cache = self._caches.get(name)
        if key is None or cache is None or not cache.enabled:
            return key, None
        result = cache.get(key)
        self.metrics.record_cache(name, hit=result is not None)
        return key, None if result is None else Served(result, cached=True)

    def prepare(self, name: str, query: Any) -> Any:
        """Validate (and for images decode) one query: InvalidInput if the model refuses it.
        Loads the model if needed; ModelUnavailable if it cannot load."""
        return self.recipe(name).prepare(self.registry.get(name), query)

    def submit(self, name: str, item: Any, *, key: Hashable | None = None,
               timeout_s: float | None = None) -> Timed[Any]:
        """Queue a prepared item; Overloaded at once when the model's queue is full.

        The result is cached when it arrives; `served(future)` tells how it was made.
        Cancelling the future takes the item out of the queue if it has not started.
        """
        future = self.runner(name).submit(item, timeout_s=timeout_s)
        cache = self._caches.get(name) if key is not None else None
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

    @staticmethod
    def served(future: Timed[Any]) -> Served:
        """The finished future's result with its queue wait, compute time and batch size."""
        return Served(future.result(), round(future.queue_s * 1e3, 4),
                      round(future.compute_s * 1e3, 4), future.batch_size)

    def predict(self, name: str, query: Any, *, timeout_s: float | None = None) -> Served:
        """lookup -> prepare -> submit -> wait, in the calling thread (UI pages, notebooks)."""
        key, hit = self.lookup(name, query)
        if hit is not None:
            return hit
        item = self.prepare(name, query)
        timeout = timeout_s if timeout_s is not None else self.settings.request_timeout_s
        future = self.submit(name, item, key=key, timeout_s=timeout)
        future.result()
        return self.served(future)

    # -- runners --------------------------------------------------------------------------
    def runner(self, name: str) -> Runner:
        """Model `name`'s batcher (Direct when batching is off), created on first use."""
        found = self._runners.get(name)
        if found is not None:
            return found
        with self._lock:
            if name not in self._runners:
                if self._closed:
                    raise Overloaded(name, retry_after_s=1.0)
                self._runners[name] = self._make_runner(name)
            return self._runners[name]

    def _make_runner(self, name: str) -> Runner:
        self.registry.status(name)  # UnknownModel for names the registry does not have
        recipe = self.recipe(name)
        registry = self.registry

        def run(items: list[Any]) -> Sequence[Any]:
            return recipe.run(registry.get(name), items)

        limits = self.batch_limits(name)
        runner: Runner
        if self.settings.batching and limits.max_batch > 1:
            runner = Batcher(run, name=name, max_batch_size=limits.max_batch,
                             max_wait_ms=limits.max_wait_ms, max_queue=limits.max_queue,
                             observer=self.metrics.record_batch)
        else:
            runner = Direct(run, name=name, workers=self.settings.threadpool_size,
                            max_queue=limits.max_queue, observer=self.metrics.record_batch)
        self.metrics.watch_queue(name, lambda: runner.queued)
        return runner

    def batch_limits(self, name: str) -> BatchLimits:
        """The model's batcher limits; a max_batch of 0 means the model's own preference
        (the image model: 4 on CPU, where bigger batches gain little, 32 on a GPU)."""
        limits = self.settings.batching_for(name)
        if limits.max_batch == 0:
            preferred = getattr(self.registry.get(name), "preferred_batch", 16)
            limits = dataclasses.replace(limits, max_batch=int(preferred))
        return limits

    # -- reports and lifecycle --------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Per model: queue depth, batching limits and cache counters."""
        out: dict[str, Any] = {}
        for name in self.registry.names():
            runner = self._runners.get(name)
            limits = self.settings.batching_for(name)
            if runner is not None:
                limits = self.batch_limits(name)
            out[name] = {
                "batching": bool(self.settings.batching and limits.max_batch != 1),
                "max_batch": limits.max_batch, "max_wait_ms": limits.max_wait_ms,
                "max_queue": limits.max_queue, "queued": runner.queued if runner else 0,
                "cache": self._caches[name].stats(),
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


_default: Engine | None = None
_default_lock = threading.Lock()


def default_engine() -> Engine:
    """The process-wide engine over the process-wide registry, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Engine(default_registry())
        return _default
