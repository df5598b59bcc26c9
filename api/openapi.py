"""/openapi.json built from the schemas the handlers validate with, and an offline docs page."""

from __future__ import annotations

import html
import json
from functools import lru_cache
from typing import Any

import msgspec
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api import schemas
from ml.config import Settings

ERRORS = {
    "400": "Malformed JSON or multipart body, or a bad X-Request-Timeout-Ms header",
    "411": "An upload without a Content-Length (UI uploads)",
    "401": "Missing or invalid API key (when keys are configured)",
    "404": "Unknown route",
    "405": "Method not allowed",
    "408": "The request body did not arrive within ML_BODY_TIMEOUT_S",
    "413": "Body over its route's limit (ML_MAX_JSON_BODY_BYTES; images ML_MAX_BODY_BYTES)",
    "415": "Wrong Content-Type",
    "422": "Body failed validation (details.errors names each field) or invalid input",
    "429": "Rate limited, or too many wrong API keys (see Retry-After)",
    "500": "Bug; the body carries a request_id",
    "503": "Model unavailable or at capacity (see Retry-After)",
    "504": "Model did not answer within the request's deadline",
}
PREDICT_ERRORS = ("400", "401", "408", "413", "415", "422", "429", "503", "504")
# Probes answer 503 with their own body, not the error shape.
OWN_BODY_ON_ERROR = {"/health", "/health/ready"}

# (method, path, summary, request schema, response schema, error statuses)
OPERATIONS: list[tuple[str, str, str, Any, type[BaseModel], tuple[str, ...]]] = [
    ("post", "/api/predict/sentiment", "Sentiment of one text", schemas.SentimentRequest,
     schemas.SentimentResponse, PREDICT_ERRORS),
    ("post", "/api/predict/batch", "Sentiment of many texts, one result per text, in order",
     schemas.BatchRequest, schemas.BatchResponse, PREDICT_ERRORS),
    ("post", "/api/predict/image", "Top-k ImageNet classes of an image (JSON or multipart)",
     (schemas.ImageRequest, schemas.IMAGE_UPLOAD_SCHEMA), schemas.ImageResponse,
     PREDICT_ERRORS),
    ("post", "/api/predict/recommend", "Product recommendations for a household",
     schemas.RecommendRequest, schemas.RecommendResponse, PREDICT_ERRORS),
    ("get", "/api/models", "Each model's state, version, load time and model card", None,
     schemas.ModelsResponse, ("401", "429")),
    ("get", "/health", "Overall health, per-model state, process memory", None,
     schemas.HealthResponse, ("503",)),
    ("get", "/health/live", "Liveness: the process answers", None, schemas.ProbeResponse, ()),
    ("get", "/health/ready", "Readiness: warmed up and not draining (503 otherwise)", None,
     schemas.ProbeResponse, ("503",)),
    ("get", "/metrics", "Request and model metrics as JSON (text/plain Accept: Prometheus)",
     None, schemas.MetricsResponse, ("401",)),
]


@lru_cache(maxsize=8)
def openapi_spec(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API."""
    models: list[type[BaseModel]] = [schemas.ErrorResponse]
    for _, _, _, _, response, _ in OPERATIONS:
        models.append(response)
    _, top = models_json_schema([(m, "serialization") for m in dict.fromkeys(models)],
                                ref_template="#/components/schemas/{model}")
    # requests: the msgspec Structs the handlers decode with
    _, requests = msgspec.json.schema_components(schemas.REQUESTS,
                                                 ref_template="#/components/schemas/{name}")
    top.setdefault("$defs", {}).update(requests)
    top["$defs"]["ImageUpload"] = dict(schemas.IMAGE_UPLOAD_SCHEMA)
    components = top.get("$defs", {})
    _limits(components, settings)
    paths: dict[str, Any] = {}
    for method, path, summary, request, response, errors in OPERATIONS:
        operation: dict[str, Any] = {
            "summary": summary,
            "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('.', '_')}",
            "responses": {"200": {"description": "OK", "content": {"application/json": {
                "schema": _ref(response)}}}},
        }
        for status in errors:
            body = response if path in OWN_BODY_ON_ERROR else schemas.ErrorResponse
            operation["responses"][status] = {"description": ERRORS[status], "content": {
                "application/json": {"schema": _ref(body)}}}
        if path.startswith("/api/predict/"):
            operation["parameters"] = [{
                "name": "X-Request-Timeout-Ms", "in": "header", "required": False,
                "description": "This request's deadline in milliseconds (default "
                               f"{settings.request_timeout_s * 1e3:g})",
                "schema": {"type": "integer", "minimum": 1,
                           "maximum": int(settings.max_request_timeout_s * 1e3)}}]
            operation["responses"]["200"]["headers"] = {"Server-Timing": {
                "description": "queue wait, compute and batch size (or a cache hit)",
                "schema": {"type": "string"}}}
        if path.startswith("/api/") and settings.api_keys:
            operation["security"] = [{"bearer": []}, {"apiKey": []}]
        if isinstance(request, tuple):
            json_schema, _ = request
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": _ref(json_schema)},
                "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ImageUpload"}}}}
        elif request is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": _ref(request)}}}
        paths.setdefault(path, {})[method] = operation
    paths["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"] = {
        "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Real-time ML prediction API", "version": "1.0.0",
                 "description": "Sentiment, image classification and recommendations served "
                                "in-process. Every error is JSON {error: {code, message, "
                                f"details}}. Batches hold up to {settings.max_batch_texts} "
                                f"texts; bodies up to {settings.max_body_bytes} bytes."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    }


def _limits(components: dict[str, Any], settings: Settings) -> None:
    """The input rules that depend on settings (checked by the models, not by pydantic),
    written into the schemas so that clients and fuzzers know them."""
    text = {"type": "string", "minLength": 1, "maxLength": settings.max_text_chars,
            "pattern": "\\S", "description": "Text with at least one non-space character, "
                                              f"up to {settings.max_text_chars} characters."}
    components["SentimentRequest"]["properties"]["text"] = text
    texts = components["BatchRequest"]["properties"]["texts"]
    texts.update({"items": text, "maxItems": settings.max_batch_texts})
    components["ImageRequest"]["oneOf"] = [{"required": ["image_base64"]},
                                           {"required": ["image_url"]}]


def _ref(model: type[Any]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def docs_html(spec: dict[str, Any]) -> str:
    """A self-contained HTML page describing every operation (no external assets)."""
    rows = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {})
            request = "".join(
                f"<p><b>{html.escape(kind)}</b></p><pre>"
                f"{html.escape(json.dumps(_resolve(s['schema'], spec), indent=2))}</pre>"
                for kind, s in body.items())
            response = op["responses"]["200"]["content"]["application/json"]["schema"]
            statuses = ", ".join(f"<code>{s}</code> {html.escape(r['description'])}"
                                 for s, r in op["responses"].items() if s != "200")
            rows.append(
                f"<section><h2><span class='m'>{method.upper()}</span> <code>{path}</code></h2>"
                f"<p>{html.escape(op['summary'])}</p>{request}"
                f"<details><summary>200 response</summary><pre>"
                f"{html.escape(json.dumps(_resolve(response, spec), indent=2))}</pre></details>"
                f"<p class='e'>{statuses}</p></section>")
    info = spec["info"]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(info['title'])}</title><style>"
        "body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;"
        "color:#1f2933}h1{font-size:1.6rem}h2{font-size:1.1rem;margin-top:2rem}"
        "pre{background:#f4f6f8;padding:.75rem;overflow:auto;font-size:13px}"
        ".m{background:#2563eb;color:#fff;border-radius:4px;padding:0 .4rem;font-size:.85rem}"
        ".e{font-size:13px;color:#52606d}</style></head><body>"
        f"<h1>{html.escape(info['title'])}</h1><p>{html.escape(info['description'])}</p>"
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a></p>"
        + "".join(rows) + "</body></html>")


def _resolve(schema: dict[str, Any], spec: dict[str, Any], depth: int = 0) -> Any:
    """Inline $refs for display."""
    if depth > 6:
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return _resolve(spec["components"]["schemas"][name], spec, depth + 1)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if isinstance(value, dict):
            out[key] = _resolve(value, spec, depth + 1)
        elif isinstance(value, list):
            out[key] = [_resolve(v, spec, depth + 1) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out
