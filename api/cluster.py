"""The Ray Serve application: a deployment per registered model, our own API as the ingress.

    serve run api.cluster:build_app        # onto a running Ray cluster
    serve deploy deploy/ray/serve.yaml     # the committed config (import_path: the same)
    python -m api.cluster --port 8000      # `make cluster`: a local Ray cluster, foreground

Nothing here is per model. `build_app` makes one `ModelServer` deployment per model of the
registry (built-ins and plugins, narrowed by ML_MODELS), each loading its model through the
registry's builder (the same artifacts, the same ML_CACHE_DIR) and batching with
`@serve.batch` at the model's own limits (`Engine.batch_limits`: the model's, then
ML_<MODEL>_MAX_BATCH / _MAX_WAIT_MS). Replicas, autoscaling and resources come from
`api.config.ClusterSettings` (ML_SERVE_* for every deployment, ML_<MODEL>_* for one). The
ingress is the API app that `create_app` builds for one process, over a `RemoteEngine`
(`api.remote`) that calls the deployments through their handles: the same routes, errors,
auth, limits, metrics and URL fetching.

Settings are the ML_* environment variables of each process (a container's env, the Serve
config's runtime_env), overridden by `build_app`'s args: {"ML_NAME": "value", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.app import create_app
from api.config import INGRESS as INGRESS_SCALING
from api.config import SCALING_ENV, ApiSettings, ClusterSettings
from api.remote import ClusterService, Description, Failure
from ml.config import Settings
from ml.contract import BatchLimits, Model
from ml.engine import Engine, Served
from ml.errors import ConfigError, MLError, ModelUnavailable
from ml.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
APP_NAME = "realtime-ml"
INGRESS_DEPLOYMENT = "Ingress"  # model names are lower case: no clash
# One ingress replica answers many requests at once: each awaits a model replica.
INGRESS_MAX_ONGOING = 256


class ModelServer:
    """One registered model as a deployment: built by the registry, batched by @serve.batch.

    Answers `predict` (one query: cache, prepare, then a batch of whatever arrived
    together), `predict_many` (a batch that is one already: the engine's path) and
    `describe` (state, card, examples). An ml error comes back as a `Failure` value. A model
    that fails to build leaves the replica up and answering 503 with the reason, as one
    process does: building it again would fail again.
    """

    def __init__(self, name: str, overrides: Mapping[str, str]) -> None:
        self.settings = Settings.from_env({**os.environ, **overrides})
        self.registry = Registry(self.settings)
        self.name = self.registry.canonical(name)
        self.engine = Engine(self.registry)  # its caches, limits, batch path and metrics
        self._compute = ThreadPoolExecutor(1, thread_name_prefix=f"predict-{self.name}")
        self._prepare = ThreadPoolExecutor(self.settings.threadpool_size,
                                           thread_name_prefix=f"prepare-{self.name}")
        self._running: dict[int, float] = {}  # model calls running now: id -> start
        self._ids = itertools.count()
        self.stuck_after_s = 3 * self.settings.request_timeout_s
        if self.settings.warmup:
            self.registry.warmup([self.name])
        else:
            with contextlib.suppress(ModelUnavailable):
                self.registry.get(self.name)
        self.model: Model | None = self.registry.loaded(self.name)
        self.limits = BatchLimits()
        if self.model is not None:
            self.limits = self.engine.batch_limits(self.name, self.model)
            batching = self.settings.batching and self.limits.max_batch > 1
            batcher: Any = self._batch  # @serve.batch's setters
            batcher.set_max_batch_size(self.limits.max_batch if batching else 1)
            batcher.set_batch_wait_timeout_s(self.limits.max_wait_ms / 1e3)

    async def predict(self, query: Any, timeout_s: float) -> Served | Failure:
        """One query's answer (the ingress keeps the deadline and cancels past it)."""
        try:
            model = self._ready()
            key = None
            cache = self.engine.cache(self.name)
            if cache.enabled and (key := model.cache_key(query)) is not None:
                hit = cache.get(key)
                self.engine.metrics.record_cache(self.name, hit=hit is not None)
                if hit is not None:
                    return Served(hit, cached=True)
            if model.heavy_prepare:
                loop = asyncio.get_running_loop()
                item = await loop.run_in_executor(self._prepare, model.prepare, query)
            else:
                item = model.prepare(query)
            result, wait, compute, size = await self._batch((item, time.perf_counter()))
            if key is not None:
                cache.put(key, result)
            return Served(result, round(wait * 1e3, 4), round(compute * 1e3, 4), size)
        except MLError as error:
            return Failure.of(error)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _batch(self, jobs: list[tuple[Any, float]]
                     ) -> list[tuple[Any, float, float, int]]:
        """The prepared items that arrived together as one vectorised call, off the loop."""
        model = self._ready()
        started = time.perf_counter()
        try:
            with self._calling():
                results = await asyncio.get_running_loop().run_in_executor(
                    self._compute, model.predict, [item for item, _ in jobs])
        except MLError:
            raise
        except Exception:
            self.engine.metrics.record_model_error(self.name)
            raise
        compute = time.perf_counter() - started
        waits = [started - queued for _, queued in jobs]
        self.engine.metrics.record_batch(self.name, waits, compute, len(jobs))
        return [(result, wait, compute, len(jobs))
                for result, wait in zip(results, waits, strict=True)]

    async def predict_many(self, queries: list[Any], timeout_s: float
                           ) -> list[Served] | Failure:
        """A batch that is one already (/api/predict/batch): the engine's path."""
        try:
            self._ready()
            with self._calling():
                many: list[Served] = await asyncio.get_running_loop().run_in_executor(
                    self._prepare, partial(self.engine.predict_many, self.name, queries,
                                           timeout_s=timeout_s))
            return many
        except MLError as error:
            return Failure.of(error)

    def describe(self) -> Description:
        """The model's state, card, first examples and batching limits."""
        status = self.registry.status(self.name)
        if self.model is None:
            return Description(status)
        return Description(status, self.model.info(), self.model.examples()[:3], self.limits,
                           self.settings.batching)

    def check_health(self) -> None:
        """Serve replaces a replica when this raises: its model stopped being ready, or one
        model call has run for three request deadlines (a wedged replica)."""
        state = self.registry.status(self.name).state
        if self.model is not None and state != "ready":
            raise ModelUnavailable(self.name, f"the model is {state}")
        oldest = min(self._running.values(), default=None)
        if oldest is not None and time.monotonic() - oldest > self.stuck_after_s:
            raise ModelUnavailable(self.name, f"one model call has run for "
                                              f"{time.monotonic() - oldest:.0f}s")

    @contextlib.contextmanager
    def _calling(self) -> Iterator[None]:
        """Note a model call as running while it runs (for check_health)."""
        call = next(self._ids)
        self._running[call] = time.monotonic()
        try:
            yield
        finally:
            del self._running[call]

    def _ready(self) -> Model:
        if self.model is None:
            status = self.registry.status(self.name)
            raise ModelUnavailable(self.name, status.reason or status.state)
        return self.model


class Ingress:
    """The API app of one process (`create_app`) over the model deployments' handles."""

    def __init__(self, models: dict[str, DeploymentHandle[Any]], overrides: dict[str, str]) -> None:
        self.models = models
        self.overrides = overrides

    def __serve_build_asgi_app__(self) -> ASGIApp:
        service = ClusterService.over_handles(self.models, {**os.environ, **self.overrides},
                                              app_name=serve.get_replica_context().app_name)
        return OneRequestId(create_app(service=service))


class OneRequestId:
    """Serve's proxy sends every request on with an X-Request-Id (the client's, or one it
    makes), which the API adopts, and adds it to the response itself: the API's copy would
    be a second header with the same value."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_one(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(k, v) for k, v in message.get("headers", ())
                                      if k.lower() != b"x-request-id"]
            await send(message)

        await self.app(scope, receive, send_one)


# -- the application --------------------------------------------------------------------------

MODEL_DEPLOYMENT = serve.deployment()(ModelServer)
INGRESS = serve.deployment()(serve.ingress()(Ingress))

def settings_of(args: Mapping[str, Any] | None) -> dict[str, str]:
    """build_app's args as settings: ML_* names only, values as text."""
    overrides = {str(k): str(v) for k, v in (args or {}).items()}
    unknown = sorted(k for k in overrides if not k.startswith("ML_"))
    if unknown:
        raise ConfigError(unknown[0], overrides[unknown[0]],
                          "an ML_* setting (the application's args are settings)")
    return overrides


def model_settings(overrides: Mapping[str, str]) -> dict[str, str]:
    """The overrides a model replica reads: all but the API's (keys, limits: the ingress's
    alone) and the cluster's own."""
    own = {f.metadata["env"] for kind in (ApiSettings, ClusterSettings)
           for f in dataclasses.fields(kind) if "env" in f.metadata}
    return {k: v for k, v in overrides.items() if k not in own and not SCALING_ENV.match(k)}


def build_limits(model_class: type[Any], name: str, settings: Settings) -> BatchLimits:
    """The model's batch limits as its class declares them, with ML_<MODEL>_* applied (a
    model whose limits depend on its device declares them on the instance: defaults)."""
    base = getattr(model_class, "batch_limits", None)
    base = base if isinstance(base, BatchLimits) else BatchLimits()
    overrides = settings.batch_overrides_for(name)
    return BatchLimits(int(overrides.get("max_batch", base.max_batch)),
                       float(overrides.get("max_wait_ms", base.max_wait_ms)),
                       int(overrides.get("max_queue", base.max_queue)))


def deployment_options(deployment: str, cluster: ClusterSettings, *, max_ongoing: int,
                       max_queued: int) -> dict[str, Any]:
    """Serve options of `deployment` (a model's name, or INGRESS)."""
    scaling = cluster.scaling(deployment)
    actor: dict[str, float] = {"num_cpus": scaling.num_cpus}
    if scaling.num_gpus:
        actor["num_gpus"] = scaling.num_gpus
    options: dict[str, Any] = {
        "ray_actor_options": actor, "max_ongoing_requests": max_ongoing,
        "max_queued_requests": max_queued,
        "health_check_period_s": cluster.health_check_period_s}
    if scaling.autoscaled:
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas, "max_replicas": scaling.max_replicas,
            "initial_replicas": scaling.min_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
            "metrics_interval_s": cluster.metrics_interval_s,
            "look_back_period_s": cluster.look_back_period_s,
            "upscale_delay_s": cluster.upscale_delay_s,
            "downscale_delay_s": cluster.downscale_delay_s}
    else:
        options["num_replicas"] = scaling.min_replicas
    return options


def plan(args: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Each deployment's Serve options, models first and the ingress last."""
    overrides = settings_of(args)
    environ = {**os.environ, **overrides}
    settings, cluster = Settings.from_env(environ), ClusterSettings.from_env(environ)
    registry = Registry(settings)
    planned: dict[str, dict[str, Any]] = {}
    for name in registry.names():
        try:
            model_class = registry.model_class(name)
        except MLError:
            continue  # not even importable: the ingress reports it failed, as one process
        limits = build_limits(model_class, name, settings)
        planned[name] = deployment_options(
            name, cluster, max_ongoing=max(limits.max_batch, 8), max_queued=limits.max_queue)
    planned[INGRESS_DEPLOYMENT] = deployment_options(
        INGRESS_SCALING, cluster, max_ongoing=INGRESS_MAX_ONGOING, max_queued=-1)
    return planned


def build_app(args: Mapping[str, Any] | None = None) -> Application:
    """The Serve application (`serve run api.cluster:build_app [ML_NAME=value ...]`)."""
    overrides = settings_of(args)
    for_models = model_settings(overrides)
    planned = plan(overrides)
    ingress = planned.pop(INGRESS_DEPLOYMENT)
    handles = {name: MODEL_DEPLOYMENT.options(name=name, **options).bind(name, for_models)
               for name, options in planned.items()}
    return INGRESS.options(name=INGRESS_DEPLOYMENT, **ingress).bind(handles, overrides)


def reserved_cpus(args: Mapping[str, Any] | None = None) -> float:
    """CPUs every deployment at its most replicas reserves together."""
    cluster = ClusterSettings.from_env({**os.environ, **settings_of(args)})
    return float(sum(
        cluster.scaling(INGRESS_SCALING if name == INGRESS_DEPLOYMENT else name).max_replicas
        * options["ray_actor_options"]["num_cpus"] for name, options in plan(args).items()))


# -- `make cluster`: a local cluster in the foreground ----------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api.cluster",
        description="Start a local Ray cluster on 127.0.0.1 and serve the application on "
                    "--host:--port, in the foreground. SIGTERM or Ctrl-C stops the "
                    "application and the Ray processes this started.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--num-cpus", type=float, default=None,
                        help="logical CPUs of the local node (default: what every replica "
                             "reserves, at least this machine's cores)")
    parser.add_argument("--set", action="append", default=[], metavar="ML_NAME=VALUE",
                        help="a setting for every replica (build_app's args)")
    options = parser.parse_args(argv)
    args = dict(item.partition("=")[::2] for item in options.set)
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set())
                for signum in (signal.SIGTERM, signal.SIGINT)}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # the workers import api and ml from this checkout, wherever they start
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    app = build_app(args)
    cpus = options.num_cpus or max(float(os.cpu_count() or 1), reserved_cpus(args))
    temp_dir = tempfile.mkdtemp(prefix="rtml-ray-")
    import ray

    try:
        ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=math.ceil(cpus),
                 include_dashboard=False, _temp_dir=temp_dir)
        for signum in previous:  # ray.init may have set its own
            signal.signal(signum, lambda *_: stop.set())
        serve.start(proxy_location="HeadOnly",
                    http_options={"host": options.host, "port": options.port})
        if not stop.is_set():
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
            print(f"serving on http://{options.host}:{options.port} (Ray Serve on a local "
                  f"cluster, {cpus:g} CPUs; Ray's files in {temp_dir}); Ctrl-C stops it",
                  flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping: the application, then the local Ray cluster", flush=True)
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()  # type: ignore[no-untyped-call]
        shutil.rmtree(temp_dir, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
