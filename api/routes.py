"""Handlers: parse and validate, call the model off the event loop, encode. No rules here."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from functools import cache
from typing import Any, TypeVar

import msgspec
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from api import schemas
from api.encoding import json_response
from api.errors import ApiError
from api.middleware import uint
from api.openapi import docs_html, openapi_spec
from api.service import Service
from ml.engine import ImageQuery, Served, TextQuery
from ml.errors import InvalidInput
from ml.metrics import PROMETHEUS_CONTENT_TYPE
from ml.recommender import Recommendations
from ml.recommender import RecommendRequest as RecommendQuery
from ml.sentiment import SentimentResult, validate_batch

M = TypeVar("M", bound=schemas.Strict)
TIMEOUT_HEADER = "x-request-timeout-ms"
# Bodies larger than this are decoded one at a time, each in a loop iteration of its own,
# so that several arriving together never stall the event loop back to back.
LARGE_BODY = 256 * 1024


def service_of(request: Request) -> Service:
    """The Service this app was built with."""
    service: Service = request.app.state.service
    return service


async def parse(request: Request, schema: type[M]) -> M:
    """The JSON body validated against `schema`: 415, 400 or 422 otherwise."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"send Content-Type: application/json (got {media_type or 'none'!r})")
    body = await request.body()
    if len(body) <= LARGE_BODY:
        return decode(body, schema)
    async with service_of(request).large_bodies:
        await asyncio.sleep(0)  # whoever else is ready runs first
        return decode(body, schema)


@cache
def _decoder(schema: type[M]) -> msgspec.json.Decoder[M]:
    return msgspec.json.Decoder(schema)


def decode(body: bytes, schema: type[M]) -> M:
    """`body` decoded and validated as `schema`: 400 for malformed JSON, 422 naming the
    first problem's field otherwise (decoding stops there)."""
    try:
        decoded: M = _decoder(schema).decode(body)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") \
            from None
    return decoded


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED = re.compile(r"field `(?P<name>[^`]*)`")


def validation_error(message: str) -> ApiError:
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
    field = field or "(body)"
    return ApiError(422, "validation_error", f"{field}: {text}",
                    details={"errors": [{"field": field, "message": text, "type": kind}]})


def sentiment_body(result: SentimentResult, detailed: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"sentiment": result.sentiment, "confidence": result.confidence,
                            "score": result.score}
    if detailed:
        body["probabilities"] = result.probabilities
        body["terms"] = [{"term": t, "weight": w} for t, w in result.terms]
    return body


def timeout_of(request: Request, service: Service) -> float:
    """The request's deadline: X-Request-Timeout-Ms if sent (1 ms up to the configured
    maximum), else the server's default."""
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return service.settings.request_timeout_s
    limit_ms = int(service.settings.max_request_timeout_s * 1e3)
    milliseconds = uint(raw)
    if milliseconds is None or not 1 <= milliseconds <= limit_ms:
        raise ApiError(400, "invalid_timeout",
                       f"{TIMEOUT_HEADER} must be an integer number of milliseconds from 1 to "
                       f"{limit_ms}", details={"header": TIMEOUT_HEADER})
    return milliseconds / 1e3


def served_response(body: dict[str, Any], served: Served, model: str) -> Response:
    """The JSON answer with the model's time, and Server-Timing saying where it went."""
    body["latency_ms"] = round(served.queue_ms + served.compute_ms, 4)
    body["model"] = model
    timing = ("cache;desc=hit" if served.cached else
              f"queue;dur={served.queue_ms:.3f}, compute;dur={served.compute_ms:.3f}, "
              f'batch;desc="{served.batch_size}"')
    return json_response(body, headers={"server-timing": timing})


async def predict_sentiment(request: Request) -> Response:
    service = service_of(request)
    body = await parse(request, schemas.SentimentRequest)
    detailed = body.options.detailed
    served = await service.predict("sentiment", TextQuery(body.text, detailed),
                                   timeout_s=timeout_of(request, service))
    return served_response(sentiment_body(served.result, detailed), served,
                           service.registry.get("sentiment").version)


async def predict_batch(request: Request) -> Response:
    service = service_of(request)
    body = await parse(request, schemas.BatchRequest)
    texts = validate_batch(body.texts, service.settings.max_batch_texts)
    detailed = body.options.detailed
    results, seconds = await service.call(
        "sentiment", lambda m: m.predict(texts, detailed=detailed),  # type: ignore[call-arg]
        items=len(texts), timeout_s=timeout_of(request, service))
    return json_response({"results": [sentiment_body(r, detailed) for r in results],
                          "count": len(results), "latency_ms": round(seconds * 1e3, 4),
                          "model": service.registry.get("sentiment").version})


async def predict_image(request: Request) -> Response:
    service = service_of(request)
    timeout = timeout_of(request, service)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        data, top_k = await image_from_form(request)
    else:
        body = await parse(request, schemas.ImageRequest)
        top_k = body.top_k
        if body.image_url is not None:
            data = await service.fetcher.fetch(body.image_url)
        else:
            data = decode_base64(body.image_base64 or "")
    served = await service.predict("image", ImageQuery(data, top_k), timeout_s=timeout)
    result = served.result
    return served_response({
        "predictions": [{"label": p.label, "confidence": p.confidence, "class_id": p.class_id}
                        for p in result.predictions],
        "width": result.width, "height": result.height},
        served, service.registry.get("image").version)


async def image_from_form(request: Request) -> tuple[bytes, int]:
    """The single `image` file (and optional `top_k`) of a multipart upload."""
    try:
        form = await request.form(max_files=1, max_fields=4)
    except ClientDisconnect:
        raise
    except Exception as exc:  # noqa: BLE001 - the multipart parser raises many kinds
        raise ApiError(400, "bad_multipart", f"could not parse the multipart body: {exc}") \
            from None
    try:
        files = [v for v in form.getlist("image") if isinstance(v, UploadFile)]
        if len(files) != 1:
            raise InvalidInput("send exactly one file in the 'image' field", field="image")
        unknown = set(form.keys()) - {"image", "top_k"}
        if unknown:
            raise InvalidInput(f"unknown form fields: {', '.join(sorted(unknown))}",
                               field=sorted(unknown)[0])
        raw_top_k = form.get("top_k", "5")
        if not isinstance(raw_top_k, str) or not re.fullmatch(r"-?[0-9]{1,9}",
                                                              raw_top_k.strip()):
            raise InvalidInput("top_k must be an integer", field="top_k")
        return await files[0].read(), int(raw_top_k)
    finally:
        await form.close()


def decode_base64(text: str) -> bytes:
    """Bytes of a base64 string (data: URL prefix allowed); InvalidInput if it is not base64."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image_base64 is not valid base64", field="image_base64") from None


async def predict_recommend(request: Request) -> Response:
    service = service_of(request)
    body = await parse(request, schemas.RecommendRequest)
    query = RecommendQuery(body.user_id, limit=body.limit, category=body.context.category,
                           exclude_purchased=body.exclude_purchased)
    served = await service.predict("recommender", query,
                                   timeout_s=timeout_of(request, service))
    result = served.result
    assert isinstance(result, Recommendations)
    return served_response({
        "recommendations": [{"item_id": i.item_id, "score": i.score,
                             "description": i.description, "department": i.department}
                            for i in result.items],
        "strategy": result.strategy, "user_id": result.user_id, "category": result.category},
        served, service.registry.get("recommender").version)


async def list_models(request: Request) -> Response:
    service = service_of(request)
    models = []
    for name, status in service.registry.statuses().items():
        entry: dict[str, Any] = {"name": name, "state": status.state, "reason": status.reason,
                                 "load_seconds": status.load_seconds, "version": status.version,
                                 "loads": service.registry.load_count(name)}
        if status.state == "ready":
            entry["info"] = service.registry.get(name).info()
        models.append(entry)
    return json_response({"models": models})


async def health(request: Request) -> Response:
    service = service_of(request)
    # process internals (memory) only for callers with a key, when keys are configured
    trusted = not service.settings.api_keys or bool(
        request.scope.get("state", {}).get("api_key_id"))
    body = service.health(internals=trusted)
    return json_response(body, status=503 if body["status"] == "unhealthy" else 200)


async def live(request: Request) -> Response:
    return json_response({"status": "alive"})


async def ready(request: Request) -> Response:
    service = service_of(request)
    if service.ready:
        return json_response({"status": "ready"})
    reason = "draining" if service.draining else "warming up"
    return json_response({"status": reason}, status=503)


async def metrics(request: Request) -> Response:
    service = service_of(request)
    service.metrics.set_model_status(service.registry.statuses().values())
    if "text/plain" in request.headers.get("accept", "") or \
            "openmetrics" in request.headers.get("accept", ""):
        return prometheus_response(service)
    return json_response({**service.metrics.snapshot(), "engine": service.engine.stats()})


async def metrics_prometheus(request: Request) -> Response:
    return prometheus_response(service_of(request))


def prometheus_response(service: Service) -> Response:
    return Response(service.metrics.prometheus(), media_type=PROMETHEUS_CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    return json_response(openapi_spec(service_of(request).settings))


async def docs(request: Request) -> Response:
    return HTMLResponse(docs_html(openapi_spec(service_of(request).settings)),
                        headers={"content-security-policy":
                                 "default-src 'none'; style-src 'unsafe-inline'"})


ROUTES = [
    Route("/api/predict/sentiment", predict_sentiment, methods=["POST"]),
    Route("/api/predict/batch", predict_batch, methods=["POST"]),
    Route("/api/predict/image", predict_image, methods=["POST"]),
    Route("/api/predict/recommend", predict_recommend, methods=["POST"]),
    Route("/api/models", list_models, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/metrics/prometheus", metrics_prometheus, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
]
