"""create_app(): the REST API as a Starlette app. `uvicorn api.app:app` serves it alone."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from api.access import logger as access_logger
from api.config import ApiSettings
from api.errors import EXCEPTION_HANDLERS
from api.inference import Inference
from api.middleware import ApiMiddleware, Auth, BodyLimit, RateLimit
from api.routes import direct_routes, operations, routes
from api.service import Service
from api.wire import Operation
from ml.registry import Registry, default_registry


def middleware_for(service: Service, ops: Sequence[Operation | str]) -> list[Middleware]:
    """The API's middleware, outermost first: CORS when origins are configured (so that
    preflights and refusals carry its headers), then the one API layer."""
    settings = service.settings
    made = routes(list(ops))
    inference = Inference(service, ops)
    stack = []
    if settings.cors_origins:
        stack.append(Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                allow_methods=["GET", "POST"],
                                allow_headers=["authorization", "x-api-key", "content-type",
                                               "x-request-id", "x-request-timeout-ms"],
                                expose_headers=["x-request-id", "retry-after",
                                                "server-timing"]))
    # routes of models that take files accept bodies up to ML_MAX_BODY_BYTES, the rest
    # stop at ML_MAX_JSON_BODY_BYTES
    with_files = {path: settings.max_body_bytes for op in ops
                  if isinstance(op, Operation) and op.takes_files
                  for path in (*op.paths, *inference.infer_paths(op))}
    stack.append(Middleware(
        ApiMiddleware, metrics=service.http_metrics,
        known_routes=[*(r.path for r in made), *inference.paths()],
        access=service.access, trusted_proxies=settings.trusted_proxies,
        body=BodyLimit(settings.max_json_body_bytes, settings.body_timeout_s, with_files),
        auth=Auth(settings.api_keys, failure_rate=settings.auth_failures_per_minute / 60,
                  failure_burst=settings.auth_failure_burst),
        rate_limit=RateLimit(service.rate_limits, service.rate_limit_exempt),
        direct={**direct_routes(service, ops),
                **dict.fromkeys(inference.infer_paths(), inference)}))
    return stack


@asynccontextmanager
async def serving(service: Service) -> AsyncIterator[None]:
    """Start warm-up (readiness waits for it); on shutdown stop being ready and clean up."""
    configure_logging()
    silence_streamlit_access_log()
    restore_signals = service.drain_on_signals()
    service.start()
    try:
        yield
    finally:
        await service.stop()
        restore_signals()
        drain_logs()


def create_app(settings: ApiSettings | None = None, registry: Registry | None = None,
               service: Service | None = None) -> Starlette:
    """The API over `registry` (default: the process-wide one, shared with the UI): a
    route per registered model, derived from the model contract."""
    if service is None:
        service = Service.over(registry or default_registry(), settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with serving(service):
            yield

    ops = operations(service.registry)
    app = Starlette(routes=routes(ops) + Inference(service, ops).routes(),
                    middleware=middleware_for(service, ops),
                    exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    # A path with a stray slash is a 404, not a redirect: Starlette's redirect is built
    # from the request's Host header, and a 307 keeps the body and often the key.
    app.router.redirect_slashes = False
    app.state.service = service
    app.state.operations = ops
    return app


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr unless the host (pytest, a process manager) already configured logging.

    Called at start-up, never at import. Access lines are one JSON object each. Records go
    through a queue to a listener thread, so request handling never waits on formatting or
    on a slow stderr; `drain_logs` writes what is queued at shutdown.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    stream = logging.StreamHandler()
    stream.setFormatter(_Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, stream)
    listener.start()
    atexit.register(listener.stop)
    root.addHandler(_EnqueueHandler(records, listener))
    root.setLevel(level)


def drain_logs() -> None:
    """Write every queued record now and log synchronously from here on.

    After the lifespan shutdown uvicorn re-raises SIGTERM, and a process ended by a signal
    runs no atexit hook: records still in the queue (the access lines of the last requests,
    flushed by the shutdown) would be lost with the listener thread.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _EnqueueHandler):
            atexit.unregister(handler.drain.stop)
            handler.drain.stop()  # writes what is queued, then joins its thread
            root.removeHandler(handler)
            for target in handler.drain.handlers:
                root.addHandler(target)


class _Formatter(logging.Formatter):
    """The usual line for every record but the access log's, which are JSON lines already
    (api.access), written as they are."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS_LOGGER:
            return record.getMessage()
        return super().format(record)


class _EnqueueHandler(logging.handlers.QueueHandler):
    """Hands records to the listener as they are: formatting happens in its thread, not in
    the request's (the stock QueueHandler formats before enqueueing, for other processes)."""

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord],
                 drain: logging.handlers.QueueListener) -> None:
        super().__init__(records)
        self.drain = drain  # the listener that writes them

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


ACCESS_LOGGER = access_logger.name


def silence_streamlit_access_log() -> None:
    """Streamlit's logger set-up gives `uvicorn.access` a console handler of its own, and
    uvicorn writes its per-request access line whenever that logger has a handler, whatever
    `--no-access-log` said (one more synchronous write per request, beside our JSON line).
    Remove just that handler; one a user configured stays."""
    access = logging.getLogger("uvicorn.access")
    handler = getattr(access, "streamlit_console_handler", None)
    if handler is not None:
        access.removeHandler(handler)


class LazyApp:
    """An ASGI app built by create_app() on its first event (uvicorn's lifespan startup),
    so that importing this module reads no environment and creates nothing."""

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


app = LazyApp()
