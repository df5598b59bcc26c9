"""Handlers: parse -> query -> engine -> encode, the same for every model. No rules here.

`routes(registry)` makes one `POST /api/predict/{name}` per registered model (and one per
alias), the batch route and the operational endpoints. Request and response shapes come
from each model's query and result types (`api.wire`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from api import schemas, wire
from api.encoding import json_response, schema_response
from api.errors import ApiError
from api.metrics import metrics_body
from api.middleware import uint
from api.openapi import docs_html, openapi_spec
from api.service import Service
from ml.engine import Served
from ml.errors import InvalidInput, MLError
from ml.metrics import PROMETHEUS_CONTENT_TYPE
from ml.registry import Registry

T = TypeVar("T")
TIMEOUT_HEADER = "x-request-timeout-ms"
# Bodies larger than this are decoded one at a time, each in a loop iteration of its own,
# so that several arriving together never stall the event loop back to back.
LARGE_BODY = 256 * 1024
Endpoint = Callable[[Request], Awaitable[Response]]


def service_of(request: Request) -> Service:
    """The Service this app was built with."""
    service: Service = request.app.state.service
    return service


def media_type_of(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def parse(request: Request, schema: type[T]) -> T:
    """The JSON body decoded as `schema`: 415, 400 or 422 otherwise."""
    media_type = media_type_of(request)
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"send Content-Type: application/json (got {media_type or 'none'!r})")
    body = await request.body()
    if len(body) <= LARGE_BODY:
        return decode(body, schema)
    async with service_of(request).large_bodies:
        await asyncio.sleep(0)  # whoever else is ready runs first
        return decode(body, schema)


_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(schema: type[T]) -> msgspec.json.Decoder[T]:
    found = _DECODERS.get(schema)
    if found is None:
        found = _DECODERS.setdefault(schema, msgspec.json.Decoder(schema))
    return found


def decode(body: bytes, schema: type[T]) -> T:
    """`body` decoded and validated as `schema`: 400 for malformed JSON, 422 naming the
    first problem's field otherwise (decoding stops there)."""
    try:
        decoded: T = _decoder(schema).decode(body)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") \
            from None
    return decoded


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED = re.compile(r"field `(?P<name>[^`]*)`")


def validation_error(message: str, prefix: str = "") -> ApiError:
    """422 for a body of the wrong shape, naming the field msgspec stopped at."""
    match = _AT.match(message)
    text, path = (match["message"], match["path"] or "") if match else (message, "")
    field = path.lstrip(".").replace("[", ".").replace("]", "")
    named = _NAMED.search(text)  # missing or unknown fields are named in the message
    if named and ("missing" in text or "unknown" in text):
        field = f"{field}.{named['name']}" if field else named["name"]
    kind = ("missing" if "missing required" in text else
            "extra_forbidden" if "unknown field" in text else
            "type_error" if text.startswith("Expected `") and ", got `" in text else
            "value_error")
    field = ".".join(p for p in (prefix, field) if p) or "(body)"
    return ApiError(422, "validation_error", f"{field}: {text}",
                    details={"errors": [{"field": field, "message": text, "type": kind}]})


def timeout_of(request: Request, service: Service) -> float:
    """The request's deadline: X-Request-Timeout-Ms if sent (1 ms up to the configured
    maximum), else the engine's default."""
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return service.engine.settings.request_timeout_s
    limit_ms = int(service.settings.max_request_timeout_s * 1e3)
    milliseconds = uint(raw)
    if milliseconds is None or not 1 <= milliseconds <= limit_ms:
        raise ApiError(400, "invalid_timeout",
                       f"{TIMEOUT_HEADER} must be an integer number of milliseconds from 1 to "
                       f"{limit_ms}", details={"header": TIMEOUT_HEADER})
    return milliseconds / 1e3


# -- reading a query ------------------------------------------------------------------------

async def read_query(request: Request, op: wire.Operation, service: Service) -> Any:
    """The model's query from a JSON body, or for models with files from multipart."""
    if op.takes_files and media_type_of(request) == "multipart/form-data":
        return await query_from_form(request, op)
    body = await parse(request, op.request)
    if not op.takes_files:
        return body
    values = msgspec.structs.asdict(body)
    for name in op.files:
        encoded, url = values.pop(f"{name}_base64"), values.pop(f"{name}_url")
        if (encoded is None) == (url is None):
            raise validation_error(f"give exactly one of {name}_base64 or {name}_url")
        values[name] = (await service.fetcher.fetch(url, field=f"{name}_url")
                        if url is not None else decode_base64(encoded, f"{name}_base64"))
    return op.query(**values)


async def query_from_form(request: Request, op: wire.Operation) -> Any:
    """A multipart body: one file per bytes field of the query, its other fields as text."""
    try:
        form = await request.form(max_files=len(op.files), max_fields=16)
    except ClientDisconnect:
        raise
    except Exception as exc:  # noqa: BLE001 - the multipart parser raises many kinds
        raise ApiError(400, "bad_multipart", f"could not parse the multipart body: {exc}") \
            from None
    try:
        values: dict[str, Any] = {}
        for key in form:
            if key in op.files:
                continue
            value = form.get(key)
            if not isinstance(value, str):
                raise InvalidInput(f"{key} must be a text field, not a file", field=key)
            values[key] = value
        for name in op.files:
            files = [v for v in form.getlist(name) if isinstance(v, UploadFile)]
            if len(files) != 1:
                raise InvalidInput(f"send exactly one file in the {name!r} field", field=name)
            values[name] = await files[0].read()
    finally:
        await form.close()
    try:  # text fields are converted to the query's types ("5" -> 5; "²" is refused)
        return msgspec.convert(values, op.query, strict=False)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None


def decode_base64(text: str, field: str) -> bytes:
    """Bytes of a base64 string (data: URL prefix allowed); InvalidInput if it is not base64."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field} is not valid base64", field=field) from None


# -- answering ------------------------------------------------------------------------------

def server_timing(served: Served) -> str:
    if served.cached:
        return "cache;desc=hit"
    return (f"queue;dur={served.queue_ms:.3f}, compute;dur={served.compute_ms:.3f}, "
            f'batch;desc="{served.batch_size}"')


def prediction_response(served: Served, version: str) -> Response:
    """The result (encoded by its own type) with latency_ms and model, and Server-Timing
    saying where the time went."""
    body = wire.encode_prediction(served.result,
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
        return prediction_response(served, model.version if model else op.name)
    return endpoint


def unavailable_endpoint(name: str) -> Endpoint:
    """The route of a model whose class could not even be imported: the engine says why."""
    async def endpoint(request: Request) -> Response:
        served = await service_of(request).engine.apredict(name, None)
        return prediction_response(served, name)
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
        results=[s.result for s in served], count=len(served),
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


async def docs(request: Request) -> Response:
    spec = spec_of(request)
    return HTMLResponse(docs_html(spec), headers={
        "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'"})


OPERATIONAL = [
    Route("/api/models", list_models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/metrics/prometheus", metrics_prometheus, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
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
