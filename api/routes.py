"""Handlers: parse -> query -> engine -> encode, the same for every model. No rules here.

`routes(registry)` makes one `POST /api/predict/{name}` per registered model (and one per
alias), the batch route and the operational endpoints. Request and response shapes come
from each model's query and result types (`api.wire`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api import docs, schemas, wire
from api.encoding import json_response, schema_response
from api.errors import ApiError, answer_error
from api.metrics import metrics_body
from api.middleware import Refusal
from api.openapi import openapi_spec
from api.queries import (
    parse,
    parse_body,
    read_body,
    read_query,
    service_of,
    timeout_of,
    validation_error,
)
from api.rounding import rounder
from api.service import Service
from ml.engine import Served
from ml.errors import InvalidInput, MLError
from ml.metrics import PROMETHEUS_CONTENT_TYPE
from ml.registry import Registry

Endpoint = Callable[[Request], Awaitable[Response]]


# -- answering ------------------------------------------------------------------------------

def server_timing(served: Served) -> str:
    if served.cached:
        return "cache;desc=hit"
    return (f"queue;dur={served.queue_ms:.3f}, compute;dur={served.compute_ms:.3f}, "
            f'batch;desc="{served.batch_size}"')


def presented(result: Any, digits: int) -> Any:
    """The result with its floats rounded for people (ML_RESPONSE_DIGITS)."""
    present = rounder(type(result), digits)  # type: ignore[arg-type]
    return result if present is None else present(result)


def prediction_response(served: Served, version: str, digits: int) -> Response:
    """The result (encoded by its own type) with latency_ms and model, and Server-Timing
    saying where the time went."""
    body = wire.encode_prediction(presented(served.result, digits),
                                  round(served.queue_ms + served.compute_ms, 4), version)
    return Response(body, media_type="application/json",
                    headers={"server-timing": server_timing(served)})


def predict_endpoint(op: wire.Operation) -> Endpoint:
    """POST /api/predict/{name}: parse -> query -> engine -> encode."""
    async def endpoint(request: Request) -> Response:
        service = service_of(request)
        timeout = timeout_of(request, service)
        query = await read_query(request, op, service)
        served = await service.engine.apredict(op.name, query, timeout_s=timeout)
        model = service.registry.loaded(op.name)
        return prediction_response(served, model.version if model else op.name,
                                   service.settings.response_digits)
    return endpoint


def direct_routes(service: Service, ops: Sequence[wire.Operation | str]) -> dict[str, ASGIApp]:
    """Bare ASGI handlers for the JSON-only predictions, by path: what `ApiMiddleware` calls
    for their POSTs without Starlette's router, Request and Response (the hot path)."""
    return {path: json_prediction(op, service) for op in ops
            if isinstance(op, wire.Operation) and not op.takes_files for path in op.paths}


def json_prediction(op: wire.Operation, service: Service) -> ASGIApp:
    """`predict_endpoint`'s steps on the raw ASGI messages; errors answered by the same
    handlers as everywhere else (`api.errors`)."""
    present = rounder(op.result, service.settings.response_digits) or (lambda result: result)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            timeout = timeout_of(scope, service)
            query = await parse_body(scope, await read_body(receive), op.request, service)
            served = await service.engine.apredict(op.name, query, timeout_s=timeout)
        except Refusal:
            raise  # the middleware's own (a body over its limit, or too slow)
        except Exception as exc:  # noqa: BLE001 - answered as the app's handlers would
            await answer_error(scope, receive, send, exc)
            return
        model = service.registry.loaded(op.name)
        body = wire.encode_prediction(present(served.result),
                                      round(served.queue_ms + served.compute_ms, 4),
                                      model.version if model else op.name)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"server-timing", server_timing(served).encode())]})
        await send({"type": "http.response.body", "body": body})
    return app


def unavailable_endpoint(name: str) -> Endpoint:
    """The route of a model whose class could not even be imported: the engine says why."""
    async def endpoint(request: Request) -> Response:
        service = service_of(request)
        served = await service.engine.apredict(name, None)
        return prediction_response(served, name, service.settings.response_digits)
    return endpoint


async def predict_batch(request: Request) -> Response:
    """POST /api/predict/batch: many texts, one model call."""
    service = service_of(request)
    timeout = timeout_of(request, service)
    body = await parse(request, wire.BatchRequest)
    limit = service.engine.settings.max_batch_texts
    if len(body.texts) > limit:  # before anything is built per text
        raise InvalidInput(f"texts holds {len(body.texts)} items; the limit is {limit}",
                           field="texts", limit=limit)
    registry = service.registry
    try:
        name = registry.canonical(body.model)
        query_type = registry.model_class(name).Query
    except MLError:
        name, query_type = body.model, None
    if query_type is None or not wire.takes_text(query_type):
        texts = [n for n in registry.names() if _takes_text(registry, n)]
        raise ApiError(422, "validation_error",
                       f"model: {body.model!r} is not a model that takes texts "
                       f"({', '.join(texts)})", details={"errors": [
                           {"field": "model", "message": "not a text model",
                            "type": "value_error"}]})
    try:
        queries = wire.batch_queries(query_type, body)
    except msgspec.ValidationError as exc:
        prefix = "" if wire.has_options_field(query_type) else "options"
        raise validation_error(str(exc), prefix=prefix) from None
    try:
        served = await service.engine.apredict_many(name, queries, timeout_s=timeout)
    except InvalidInput as exc:
        index = exc.details.get("index")
        if index is None:
            raise InvalidInput(exc.message.replace("the batch", "texts"), field="texts",
                               **{k: v for k, v in exc.details.items() if k != "field"}) \
                from None
        raise InvalidInput(exc.message.replace(f"item {index}", f"texts[{index}]"),
                           field=f"texts[{index}]") from None
    model = registry.loaded(name)
    response = wire.batch_response_type(type(served[0].result))(  # type: ignore[arg-type]
        results=[presented(s.result, service.settings.response_digits) for s in served],
        count=len(served),
        latency_ms=round(max(s.compute_ms for s in served), 4),
        model=model.version if model else name)
    return Response(msgspec.json.encode(response), media_type="application/json")


def _takes_text(registry: Registry, name: str) -> bool:
    try:
        return wire.takes_text(registry.model_class(name).Query)
    except MLError:
        return False


# -- operations -----------------------------------------------------------------------------

async def list_models(request: Request) -> Response:
    service = service_of(request)
    registry = service.registry
    aliases = registry.aliases()
    models = []
    for name, status in registry.statuses().items():
        loaded = registry.loaded(name)
        models.append(schemas.ModelState(
            name=name, state=status.state, origin=status.origin,
            routes=[f"/api/predict/{n}" for n in (name, *(a for a, m in aliases.items()
                                                         if m == name))],
            loads=registry.load_count(name), reason=status.reason,
            load_seconds=status.load_seconds, version=status.version,
            info=loaded.info() if loaded is not None else None))
    return Response(msgspec.json.encode(schemas.ModelsResponse(models)),
                    media_type="application/json")


async def health(request: Request) -> Response:
    service = service_of(request)
    # process internals (memory) only for callers with a key, when keys are configured
    trusted = not service.settings.api_keys or bool(
        request.scope.get("state", {}).get("api_key_id"))
    body = service.health(internals=trusted)
    return schema_response(schemas.HealthResponse, body,
                           status=503 if body.status == "unhealthy" else 200)


ALIVE, READY = schemas.ProbeResponse("alive"), schemas.ProbeResponse("ready")


async def live(request: Request) -> Response:
    return schema_response(schemas.ProbeResponse, ALIVE)


async def ready(request: Request) -> Response:
    service = service_of(request)
    if service.ready:
        return schema_response(schemas.ProbeResponse, READY)
    reason = "draining" if service.draining else "warming up"
    return schema_response(schemas.ProbeResponse, schemas.ProbeResponse(reason), status=503)


async def metrics(request: Request) -> Response:
    service = service_of(request)
    service.metrics.set_model_status(service.registry.statuses().values())
    accept = request.headers.get("accept", "")
    if "text/plain" in accept or "openmetrics" in accept:
        return prometheus_response(service)
    return schema_response(schemas.MetricsResponse, metrics_body(
        service.http_metrics, service.metrics, service.engine.stats()))


async def metrics_prometheus(request: Request) -> Response:
    service = service_of(request)
    service.metrics.set_model_status(service.registry.statuses().values())
    return prometheus_response(service)


def prometheus_response(service: Service) -> Response:
    return Response(service.metrics.prometheus(), media_type=PROMETHEUS_CONTENT_TYPE)


def spec_of(request: Request) -> dict[str, Any]:
    """This app's OpenAPI document, with examples from the models loaded now."""
    service = service_of(request)
    ops: list[wire.Operation | str] = request.app.state.operations
    examples = {}
    for op in ops:
        model = service.registry.loaded(op.name) if isinstance(op, wire.Operation) else None
        if isinstance(op, wire.Operation) and model is not None:
            examples[op.name] = op.example_bodies(model.examples()[:3])
    return openapi_spec(service.settings, service.engine.settings, ops, examples)


async def openapi(request: Request) -> Response:
    return json_response(spec_of(request))


OPERATIONAL = [
    Route("/api/models", list_models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/metrics/prometheus", metrics_prometheus, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", docs.page, methods=["GET"]),
    Route("/docs/{name}", docs.asset, methods=["GET"]),
]


def operations(registry: Registry) -> list[wire.Operation | str]:
    """Each registered model's REST surface (its name alone if its class cannot load)."""
    aliases = registry.aliases()
    found: list[wire.Operation | str] = []
    for name in registry.names():
        try:
            cls = registry.model_class(name)
        except MLError:
            found.append(name)
            continue
        found.append(wire.operation(name, cls, tuple(a for a, m in aliases.items()
                                                     if m == name)))
    return found


def routes(ops: list[wire.Operation | str]) -> list[Route]:
    """The API's routes for these model operations."""
    made = [Route(wire.BATCH_ROUTE, predict_batch, methods=["POST"])]
    for op in ops:
        if isinstance(op, str):
            made.append(Route(f"/api/predict/{op}", unavailable_endpoint(op), methods=["POST"]))
            continue
        endpoint = predict_endpoint(op)
        made += [Route(path, endpoint, methods=["POST"]) for path in op.paths]
    return made + OPERATIONAL
