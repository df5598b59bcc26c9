"""HTTP request metrics, in the same Prometheus registry as the model metrics."""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ml.metrics import LATENCY_BUCKETS, LatencyWindow, Metrics


class HttpMetrics:
    """Requests by route, method and status; latency by route and status class (2xx, 4xx,
    5xx); requests in flight; and the JSON summary of predictions (probes left out)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._by_status: dict[int, int] = {}
        self._by_route: dict[str, int] = {}
        self._latency = LatencyWindow()
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.requests = Counter("http_requests_total", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=registry)
        self.request_latency = Histogram("http_request_duration_seconds",
                                         "HTTP request latency by route and status class",
                                         ["route", "status_class"], buckets=LATENCY_BUCKETS,
                                         registry=registry)
        self.in_flight = Gauge("http_requests_in_flight", "Requests being served",
                               registry=registry)

    @classmethod
    def of(cls, metrics: Metrics) -> HttpMetrics:
        """The HTTP metrics in `metrics`' registry: one set per registry, shared by every
        app over the same engine and by the UI page that shows them."""
        with _ATTACHED_LOCK:
            found = _ATTACHED.get(metrics)
            if found is None:
                found = _ATTACHED[metrics] = cls(metrics.registry)
            return found

    def record(self, route: str, method: str, status: int, seconds: float, *,
               prediction: bool = True) -> None:
        """Count one finished request; probes (prediction=False) stay out of the JSON
        success rate and latency percentiles but are exported to Prometheus."""
        children = self._children.get((route, method, status))
        if children is None:  # labels() takes a lock and builds a key: once per combination
            children = self._children[(route, method, status)] = (
                self.requests.labels(route, method, str(status)),
                self.request_latency.labels(route, f"{status // 100}xx"))
        children[0].inc()
        children[1].observe(seconds)
        if not prediction:
            return
        self._latency.add(seconds)
        with self._lock:
            self._by_status[status] = self._by_status.get(status, 0) + 1
            self._by_route[route] = self._by_route.get(route, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The "requests" and "performance" parts of the JSON /metrics body."""
        with self._lock:
            by_status = dict(self._by_status)
            by_route = dict(self._by_route)
        total = sum(by_status.values())
        errors = sum(n for status, n in by_status.items() if status >= 400)
        server_errors = sum(n for status, n in by_status.items() if status >= 500)
        return {
            "requests": {
                "total": total,
                "success": total - errors,
                "client_errors": errors - server_errors,
                "server_errors": server_errors,
                "success_rate": round((total - errors) / total, 4) if total else 1.0,
                "by_status": {str(k): v for k, v in sorted(by_status.items())},
                "by_route": dict(sorted(by_route.items())),
            },
            "performance": self._latency.summary(),
        }


_ATTACHED: weakref.WeakKeyDictionary[Metrics, HttpMetrics] = weakref.WeakKeyDictionary()
_ATTACHED_LOCK = threading.Lock()


def metrics_body(http: HttpMetrics, models: Metrics, engine_stats: dict[str, Any]
                 ) -> dict[str, Any]:
    """The JSON /metrics body: uptime, requests, performance, models, engine."""
    return {"uptime_s": round(time.time() - models.started, 3), **http.snapshot(),
            "models": models.snapshot(), "engine": engine_stats}
