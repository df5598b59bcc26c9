"""The engine and registry interfaces over models served by Ray Serve deployments.

The cluster's ingress (`api.cluster`) runs our own API app, built by `create_app` as in one
process; only the engine and registry under it differ. `RemoteEngine` sends each prediction
to the model's deployment through a `DeploymentHandle` and answers with the same `Served`
and the same ml errors as `Engine`; `RemoteRegistry` knows the models' classes (the routes
and schemas derive from them, as in one process) and learns their states, versions and
cards from the deployments; `ClusterService` is the API's `Service` over both, whose
/health also counts each model's replicas.

Errors cross the process boundary as `Failure` values: an ml error's own pickling would
lose its fields (`details`, `retry_after_s`), and Ray logs every raised exception as a
failure. Ray's own errors are mapped here: a replica that died or could not be reached
while answering is a 503 (`ModelUnavailable`), a full queue is `Overloaded` (503 with
Retry-After), a deadline is `DeadlineExceeded` (504), and an error raised by a model's own
code is a 500, as in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import msgspec
from ray import serve
from ray.exceptions import RayError, RayTaskError
from ray.serve.exceptions import BackPressureError, RayServeException
from ray.serve.handle import DeploymentHandle

from api.config import ApiSettings
from api.ratelimit import shared_buckets
from api.schemas import HealthResponse
from api.service import Service
from ml.config import Settings
from ml.contract import BatchLimits, Model
from ml.engine import Engine, Served
from ml.errors import DeadlineExceeded, MLError, ModelUnavailable, Overloaded
from ml.metrics import Metrics
from ml.registry import ModelStatus, Registry

logger = logging.getLogger("api")


@dataclass(frozen=True)
class Failure:
    """An ml error raised in a replica, carried back to the ingress with all its fields."""

    kind: type[MLError]
    args: tuple[Any, ...]
    state: dict[str, Any]

    @classmethod
    def of(cls, error: MLError) -> Failure:
        return cls(type(error), error.args, dict(vars(error)))

    def error(self) -> MLError:
        """The error as it was raised (without calling its constructor again)."""
        error = self.kind.__new__(self.kind)
        error.args = self.args
        vars(error).update(self.state)
        return error


@dataclass(frozen=True)
class Description:
    """What a model deployment says about its model: state, card, examples, limits."""

    status: ModelStatus
    info: dict[str, Any] | None = None
    examples: list[Any] = field(default_factory=list)
    limits: BatchLimits | None = None
    batching: bool = True


class RemoteModel:
    """A model served by a deployment, as the API sees it: name, version, card, examples.
    Predictions go through `RemoteEngine`; this view has no weights to predict with."""

    Query: ClassVar[type[msgspec.Struct]]
    Result: ClassVar[type[msgspec.Struct]]

    def __init__(self, model_class: type[Model], description: Description) -> None:
        self.description = description
        self.name = description.status.name
        self.version = description.status.version or str(getattr(model_class, "version", ""))
        self.heavy_prepare = bool(getattr(model_class, "heavy_prepare", False))
        self.batch_limits = description.limits or BatchLimits()

    @classmethod
    def of(cls, model_class: type[Model], description: Description) -> RemoteModel:
        """A view of `model_class` (its query and result types) with what its deployment
        said."""
        view = cast(type[RemoteModel], type(f"Remote{model_class.__name__}", (cls,), {
            "Query": model_class.Query, "Result": model_class.Result}))
        return view(model_class, description)

    def prepare(self, query: Any) -> Any:
        raise TypeError(f"{self.name} runs on the cluster: predict through RemoteEngine")

    def predict(self, items: Sequence[Any]) -> list[Any]:
        raise TypeError(f"{self.name} runs on the cluster: predict through RemoteEngine")

    def cache_key(self, query: Any) -> None:
        return None  # each replica caches its own answers

    def examples(self) -> list[Any]:
        return list(self.description.examples)

    def workload(self, count: int) -> list[Any]:
        examples = self.examples()
        return [examples[i % len(examples)] for i in range(count)] if examples else []

    def info(self) -> dict[str, Any]:
        return dict(self.description.info or {})

    def warmup(self) -> None:
        """Nothing to do here: each replica warmed its model up when it started."""


class RemoteRegistry(Registry):
    """The registry of the ingress: names, aliases and classes from this process's registry
    (settings, entry points, ML_MODELS), states and cards from the deployments.

    `handles` holds a DeploymentHandle per deployed model. A model whose class could not
    even be imported has no deployment and is `failed` here as in one process; a deployed
    one is `loading` until its deployment describes it, then what the deployment says.
    """

    def __init__(self, settings: Settings, handles: Mapping[str, DeploymentHandle[Any]],
                 *, describe_timeout_s: float = 5.0) -> None:
        super().__init__(settings)
        self.handles = dict(handles)
        self.describe_timeout_s = describe_timeout_s
        self._views: dict[str, RemoteModel] = {}
        self._replicas: dict[str, dict[str, int]] = {}
        for name, status in self.statuses().items():
            if name in self.handles:
                self._set(ModelStatus(name, "loading", origin=status.origin))
            elif status.state != "failed":  # importable here, but not where it was built
                self._set(ModelStatus(name, "failed", origin=status.origin, reason=(
                    "not deployed: its class could not be imported when the application "
                    "was built")))

    # -- the models, as their deployments describe them -------------------------------------
    def loaded(self, name: str) -> Model | None:
        return self._views.get(name)

    def get(self, name: str) -> Model:
        """The model's view; ModelUnavailable unless its deployment serves it."""
        name = self.canonical(name)
        view = self._views.get(name)
        if view is None:
            status = self.status(name)
            raise ModelUnavailable(name, status.reason or status.state)
        return view

    def reload(self, name: str) -> Model:
        raise ModelUnavailable(name, "a model on the cluster is reloaded by redeploying it")

    def load_count(self, name: str) -> int:
        """Replicas of the model running now (each built it once)."""
        return self._replicas.get(self.canonical(name), {}).get("RUNNING", 0)

    def describe(self, name: str, description: Description) -> None:
        """Take what model `name`'s deployment says about it."""
        status = description.status
        if status.state == "ready":
            self._views[name] = RemoteModel.of(self.model_class(name), description)
        else:
            self._views.pop(name, None)
        self._set(ModelStatus(name, status.state, status.reason, status.load_seconds,
                              status.version, self.origin(name)))

    def refresh(self, names: Iterable[str] | None = None) -> None:
        """Ask the deployments of `names` (default: every deployed model) that have a
        running replica to describe their models; one that does not answer within the
        timeout keeps its last state."""
        for name in names if names is not None else list(self.handles):
            if not self._replicas.get(name, {}).get("RUNNING"):
                continue  # the call would wait for a replica: the monitor counts them
            try:
                description = self.handles[name].describe.remote().result(
                    timeout_s=self.describe_timeout_s)
            except (RayError, RayServeException, TimeoutError) as exc:
                logger.warning("model %s: its deployment did not describe it (%s)", name,
                               type(exc).__name__)
                continue
            self.describe(name, description)

    def warmup(self, names: Iterable[str] | None = None, *, timeout_s: float = 600.0
               ) -> dict[str, ModelStatus]:
        """Wait (up to `timeout_s`) until every deployment has described its model: the
        replicas load and warm up their models themselves before Serve routes to them."""
        deadline = time.monotonic() + timeout_s
        names = list(names if names is not None else self.handles)
        while time.monotonic() < deadline:
            loading = [n for n in names if self.status(n).state == "loading"]
            if not loading:
                break
            self.refresh(loading)
            time.sleep(0.25)
        return self.statuses()

    # -- replicas ---------------------------------------------------------------------------
    def replicas(self) -> dict[str, int]:
        """Running replicas of each deployed model."""
        return {name: self._replicas.get(name, {}).get("RUNNING", 0) for name in self.handles}

    def replica_states(self, name: str) -> dict[str, int]:
        """Model `name`'s replicas by state (RUNNING, STARTING, ...), as Serve reports them."""
        return dict(self._replicas.get(name, {}))

    def count(self, states: Mapping[str, Mapping[str, int]]) -> None:
        """Take the replica counts of each deployment (from `serve.status()`). A model whose
        deployment has no running replica is loading again (Serve is replacing them)."""
        self._replicas = {name: dict(states.get(name, {})) for name in self.handles}
        for name in self.handles:
            status = self.status(name)
            if status.state == "ready" and not self._replicas[name].get("RUNNING"):
                self._views.pop(name, None)
                self._set(ModelStatus(name, "loading", origin=status.origin))


class AnswerMetrics(Metrics):
    """The model metrics of an ingress, which sees answers, not model calls (the replicas
    make those): each answer counts as a call, with the compute of the call it came from,
    its own queue wait and the size of the batch it was in."""

    def record_answer(self, model: str, served: Served) -> None:
        wait, compute = served.queue_ms / 1e3, served.compute_ms / 1e3
        self.record_model(model, compute)
        _, _, sizes, waits = self._children(model)
        sizes.observe(served.batch_size)
        waits.observe(wait)
        with self._lock:
            entry = self._entry(model)
        entry["queue"].add(wait)
        entry["sizes"].add(float(served.batch_size))


# Ray's errors that mean the replica went away or could not be reached (not the model's fault)
ReplicaLost = (RayError, RayServeException)


class RemoteEngine(Engine):
    """`Engine`'s interface over Serve deployment handles: a prediction goes to a replica of
    the model's deployment (which batches it with `@serve.batch`, see `api.cluster`) and
    comes back as the same `Served`, or the same ml error, as in one process."""

    def __init__(self, registry: RemoteRegistry, *, settings: Settings | None = None,
                 metrics: Metrics | None = None) -> None:
        super().__init__(registry, settings=settings, metrics=metrics or AnswerMetrics())
        self.remote = registry

    # -- the async path (the API) -----------------------------------------------------------
    async def apredict(self, name: str, query: Any, *, timeout_s: float | None = None
                       ) -> Served:
        name = self.registry.canonical(name)
        timeout = self.settings.request_timeout_s if timeout_s is None else timeout_s
        handle = self._handle(name)
        served: Served = await self._call(name, timeout, handle.predict.remote, query, timeout)
        self._record(name, [served])
        return served

    async def apredict_many(self, name: str, queries: Sequence[Any], *,
                            timeout_s: float | None = None) -> list[Served]:
        name = self.registry.canonical(name)
        timeout = self.settings.request_timeout_s if timeout_s is None else timeout_s
        handle = self._handle(name)
        many: list[Served] = await self._call(name, timeout, handle.predict_many.remote,
                                              list(queries), timeout)
        self._record(name, many)
        return many

    # -- the synchronous path (notebooks, scripts on a driver) ------------------------------
    def predict(self, name: str, query: Any, *, timeout_s: float | None = None) -> Served:
        name = self.registry.canonical(name)
        timeout = self.settings.request_timeout_s if timeout_s is None else timeout_s
        with self._translated(name, timeout):
            answer = self._handle(name).predict.remote(query, timeout).result(
                timeout_s=timeout)
        served: Served = _unwrap(answer)
        self._record(name, [served])
        return served

    def predict_many(self, name: str, queries: Sequence[Any], *,
                     timeout_s: float | None = None) -> list[Served]:
        name = self.registry.canonical(name)
        timeout = self.settings.request_timeout_s if timeout_s is None else timeout_s
        with self._translated(name, timeout):
            answer = self._handle(name).predict_many.remote(list(queries), timeout).result(
                timeout_s=timeout)
        many: list[Served] = _unwrap(answer)
        self._record(name, many)
        return many

    # -- steps ------------------------------------------------------------------------------
    def _handle(self, name: str) -> DeploymentHandle[Any]:
        handle = self.remote.handles.get(name)
        if handle is None:  # its class could not be imported: never deployed
            status = self.registry.status(name)
            raise ModelUnavailable(name, status.reason or "not deployed")
        return handle

    async def _call(self, name: str, timeout: float, send: Callable[..., Any],
                    *args: Any) -> Any:
        """Send one request and await its answer within `timeout`, Ray's errors translated."""
        response = None
        with self._translated(name, timeout):
            try:
                async with asyncio.timeout(timeout):
                    response = send(*args)
                    answer = await response
            except TimeoutError:
                if response is not None:
                    response.cancel()
                raise
        return _unwrap(answer)

    @contextlib.contextmanager
    def _translated(self, name: str, timeout: float) -> Iterator[None]:
        """Ray's errors as the ml errors the API answers (see the module docstring)."""
        try:
            yield
        except TimeoutError:
            raise DeadlineExceeded(name, timeout) from None
        except BackPressureError:
            raise Overloaded(name, retry_after_s=1.0) from None
        except RayTaskError as exc:  # the model's own code raised: a bug, a 500
            self.metrics.record_model_error(name)
            raise RuntimeError(f"model {name} raised {type(exc.cause).__name__}: "
                               f"{exc.cause}") from None
        except ReplicaLost as exc:
            logger.warning("model %s: request lost with its replica (%s)", name,
                           type(exc).__name__)
            raise ModelUnavailable(
                name, f"its replica stopped while answering ({type(exc).__name__}); Ray "
                      "Serve replaces it: retry shortly") from None

    def _record(self, name: str, served: Sequence[Served]) -> None:
        metrics = self.metrics
        for one in served:
            if one.cached:
                metrics.record_cache(name, hit=True)
            elif isinstance(metrics, AnswerMetrics):
                metrics.record_answer(name, one)

    # -- reports and lifecycle --------------------------------------------------------------
    def batch_limits(self, name: str, model: Model | None = None) -> BatchLimits:
        view = self.registry.loaded(self.registry.canonical(name))
        return view.batch_limits if view is not None else BatchLimits()

    def stats(self) -> dict[str, Any]:
        """Per described model: its deployment's batching limits and its replicas by state."""
        out: dict[str, Any] = {}
        for name in self.remote.handles:
            view = self.registry.loaded(name)
            if not isinstance(view, RemoteModel):
                continue
            limits = view.batch_limits
            out[name] = {"batching": view.description.batching and limits.max_batch > 1,
                         "max_batch": limits.max_batch, "max_wait_ms": limits.max_wait_ms,
                         "max_queue": limits.max_queue,
                         "replicas": self.remote.replica_states(name)}
        return out


def _unwrap(answer: Any) -> Any:
    if isinstance(answer, Failure):
        raise answer.error()
    return answer


class ClusterService(Service):
    """The API's `Service` on the cluster's ingress: a `RemoteEngine`, rate limits shared
    through Redis when ML_REDIS_URL is set, and a monitor thread that keeps the models'
    states and replica counts current (so /health, /metrics and /api/models answer without
    a call to the cluster)."""

    def __init__(self, settings: ApiSettings, engine: RemoteEngine, *,
                 app_name: str | None = None, refresh_s: float = 1.0) -> None:
        super().__init__(settings, engine, owns_engine=True,
                         rate_limits=shared_buckets(settings))
        self.remote = engine.remote
        self.app_name = app_name
        self.refresh_s = refresh_s
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None

    @classmethod
    def over_handles(cls, handles: Mapping[str, DeploymentHandle[Any]],
                     environ: Mapping[str, str], app_name: str | None = None
                     ) -> ClusterService:
        """The service of an ingress replica whose model deployments are `handles`."""
        settings = Settings.from_env(environ)
        registry = RemoteRegistry(settings, handles)
        return cls(ApiSettings.from_env(environ), RemoteEngine(registry), app_name=app_name)

    def start(self) -> None:
        super().start()
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name="cluster-monitor",
                                             daemon=True)
            self._monitor.start()

    async def stop(self) -> None:
        self._stop.set()
        await super().stop()
        close = getattr(self.rate_limits, "close", None)
        if callable(close):
            close()

    def health(self, *, internals: bool = True) -> HealthResponse:
        """The /health body, with each model's running replicas."""
        body = super().health(internals=internals)
        return msgspec.structs.replace(body, replicas=self.remote.replicas())

    def _watch(self) -> None:
        while True:
            try:
                self.poll()
            except Exception:  # the monitor outlives a failed poll
                logger.exception("cluster monitor: polling Ray Serve failed")
            if self._stop.wait(self.refresh_s):
                return

    def poll(self) -> None:
        """Replica counts from Serve, and a fresh description of every model not ready."""
        app = self.app_name or serve.get_replica_context().app_name
        status = serve.status().applications.get(app)
        if status is None:
            return
        self.remote.count({name: {str(getattr(state, "value", state)): count
                                  for state, count in d.replica_states.items()}
                           for name, d in status.deployments.items()})
        waiting = [n for n, s in self.remote.statuses().items()
                   if n in self.remote.handles and s.state in ("pending", "loading")]
        if waiting:
            self.remote.refresh(waiting)
            self.metrics.set_model_status(self.remote.statuses().values())
