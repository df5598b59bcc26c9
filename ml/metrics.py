"""Model metrics: JSON snapshots for people, Prometheus text for scrapers.

`Metrics` owns the Prometheus registry of a serving process: model calls, compute, queue
waits, batch sizes, queue depths, cache lookups, load state, and the standard process,
platform and garbage-collector collectors (so stock dashboards find
`process_resident_memory_bytes`, `process_cpu_seconds_total`, ...). The HTTP layer
registers its request metrics in the same registry (`api.metrics`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class LatencyWindow:
    """The most recent latencies (seconds), for percentiles that follow current behaviour."""

    def __init__(self, size: int = 10_000) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.count = 0
        self.total = 0.0

    def add(self, seconds: float) -> None:
        """Record one latency."""
        with self._lock:
            self._values.append(seconds)
            self.count += 1
            self.total += seconds

    def extend(self, values: Sequence[float]) -> None:
        """Record several latencies under one lock (a batch's queue waits)."""
        with self._lock:
            self._values.extend(values)
            self.count += len(values)
            self.total += sum(values)

    def distribution(self) -> dict[str, float]:
        """Mean, median and max of the window's raw values (for counts such as batch sizes)."""
        with self._lock:
            values = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
        if not len(values):
            return {"mean": 0.0, "p50": 0.0, "max": 0.0}
        return {"mean": round(float(values.mean()), 2), "p50": float(np.median(values)),
                "max": float(values.max())}

    def summary(self) -> dict[str, float]:
        """avg (over all time) and p50/p95/p99 (over the window), in milliseconds."""
        with self._lock:
            values = np.fromiter(self._values, dtype=np.float64, count=len(self._values))
            count, total = self.count, self.total
        if not count:
            return {"avg_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
        p50, p95, p99 = np.percentile(values, [50, 95, 99]) * 1e3
        return {"avg_ms": round(total / count * 1e3, 4), "p50_ms": round(float(p50), 4),
                "p95_ms": round(float(p95), 4), "p99_ms": round(float(p99), 4)}


class Metrics:
    """The model counters of one serving process; each instance has its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.started = time.time()
        self._lock = threading.Lock()
        self._models: dict[str, dict[str, Any]] = {}
        self._series: dict[str, tuple[Any, Any, Any, Any]] = {}
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.model_calls = Counter("model_calls_total", "Model calls by model and outcome",
                                   ["model", "outcome"], registry=self.registry)
        self.model_latency = Histogram("model_inference_seconds", "Model compute time",
                                       ["model"], buckets=LATENCY_BUCKETS,
                                       registry=self.registry)
        self.model_load = Gauge("model_load_seconds", "Time the model took to load",
                                ["model"], registry=self.registry)
        self.model_ready = Gauge("model_ready", "1 when the model is loaded and ready",
                                 ["model"], registry=self.registry)
        self.queue_wait = Histogram("model_queue_wait_seconds",
                                    "Time a request waited in its model's batch queue",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("model_batch_size", "Requests served by one model call",
                                    ["model"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("model_queue_depth", "Requests waiting for the model now",
                                 ["model"], registry=self.registry)
        self.cache_lookups = Counter("prediction_cache_total",
                                     "Prediction cache lookups by model and result",
                                     ["model", "result"], registry=self.registry)

    def _children(self, model: str) -> tuple[Any, Any, Any, Any]:
        """The model's labelled series: labels() takes a lock and builds a key each time,
        which per call cost more than a cheap model's prediction."""
        found = self._series.get(model)
        if found is None:
            found = self._series[model] = (
                self.model_calls.labels(model, "ok"), self.model_latency.labels(model),
                self.batch_size.labels(model), self.queue_wait.labels(model))
        return found

    def record_model(self, model: str, seconds: float, *, ok: bool = True, items: int = 1) -> None:
        """Count one model call of `items` inputs that took `seconds` of compute."""
        if ok:
            calls, latency, _, _ = self._children(model)
            calls.inc()
            latency.observe(seconds)
        else:
            self.model_calls.labels(model, "error").inc()
        with self._lock:
            entry = self._entry(model)
            entry["calls"] += 1
            entry["items"] += items
            if not ok:
                entry["errors"] += 1
        if ok:
            entry["window"].add(seconds)

    def record_batch(self, model: str, waits: Sequence[float], seconds: float,
                     size: int) -> None:
        """One batched model call: each item's queue wait, the call's compute, its size."""
        self.record_model(model, seconds, items=size)
        _, _, sizes, histogram = self._children(model)
        sizes.observe(size)
        for wait in waits:
            histogram.observe(wait)
        with self._lock:
            entry = self._entry(model)
        entry["queue"].extend(waits)
        entry["sizes"].add(float(size))

    def record_model_error(self, model: str) -> None:
        """A model call that raised something other than a refusal of its input."""
        self.model_calls.labels(model, "error").inc()
        with self._lock:
            self._entry(model)["errors"] += 1

    def record_cache(self, model: str, *, hit: bool) -> None:
        """One prediction-cache lookup."""
        self.cache_lookups.labels(model, "hit" if hit else "miss").inc()
        with self._lock:
            self._entry(model)["hits" if hit else "misses"] += 1

    def watch_queue(self, model: str, depth: Callable[[], float]) -> None:
        """Export `depth()` as the model's queue-depth gauge."""
        self.queue_depth.labels(model).set_function(depth)

    def _entry(self, model: str) -> dict[str, Any]:
        entry = self._models.get(model)
        if entry is None:
            entry = self._models[model] = {
                "calls": 0, "errors": 0, "items": 0, "hits": 0, "misses": 0,
                "window": LatencyWindow(), "queue": LatencyWindow(),
                "sizes": LatencyWindow(size=2000)}
        return entry

    def set_model_status(self, statuses: Iterable[Any]) -> None:
        """Mirror registry statuses (name, state, load_seconds) into gauges."""
        for status in statuses:
            self.model_ready.labels(status.name).set(1.0 if status.state == "ready" else 0.0)
            if status.load_seconds is not None:
                self.model_load.labels(status.name).set(status.load_seconds)

    def snapshot(self) -> dict[str, Any]:
        """Per model: calls, errors, items, compute latency, queue waits, batch sizes and
        cache counters (the "models" part of the JSON /metrics body)."""
        with self._lock:
            entries = dict(self._models)
        return {name: {"calls": e["calls"], "errors": e["errors"], "items": e["items"],
                       "latency": e["window"].summary(),
                       "queue_wait": e["queue"].summary(),
                       "batch_size": e["sizes"].distribution(),
                       "cache": {"hits": e["hits"], "misses": e["misses"]}}
                for name, e in entries.items()}

    def prometheus(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
