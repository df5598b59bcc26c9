"""/openapi.json derived from the registry: every model's route with the request and
response schemas of its query and result types (`api.wire`), the batch route, the
operational endpoints; and an offline docs page.

Written for code generators as well as validators: no top-level oneOf (a file field's two
JSON forms are both optional properties, "exactly one" stated in their descriptions and
checked by the server), the multipart form of file-taking models, the security requirement
when keys are configured, and the error shape with its request id.
"""

from __future__ import annotations

from typing import Any

import msgspec

from api import inference, schemas, tensors, wire
from api.config import ApiSettings
from ml.config import Settings

ERRORS = {
    "400": "Malformed JSON or multipart body, or a bad X-Request-Timeout-Ms header",
    "401": "Missing or invalid API key (when keys are configured)",
    "404": "Unknown route",
    "405": "Method not allowed",
    "408": "The request body did not arrive within ML_BODY_TIMEOUT_S",
    "413": "Body over its route's limit (ML_MAX_JSON_BODY_BYTES; routes taking files: "
           "ML_MAX_BODY_BYTES)",
    "415": "Wrong Content-Type",
    "422": "Body failed validation (details.errors names the field) or invalid input",
    "429": "Rate limited, or too many wrong API keys (see Retry-After)",
    "500": "Bug; the body carries a request_id",
    "503": "Model unavailable or at capacity (see Retry-After)",
    "504": "Model did not answer within the request's deadline",
}
PREDICT_ERRORS = ("400", "401", "408", "413", "415", "422", "429", "503", "504")
REF = "#/components/schemas/{name}"


def openapi_spec(settings: ApiSettings, ml: Settings,
                 operations: list[wire.Operation | str],
                 examples: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API; `examples`: request bodies by model."""
    ops = [op for op in operations if isinstance(op, wire.Operation)]
    types: list[Any] = [schemas.ErrorResponse, schemas.HealthResponse, schemas.ProbeResponse,
                        schemas.ModelsResponse, schemas.MetricsResponse, wire.BatchRequest]
    for op in ops:
        types += [op.request, op.response]
    text_ops = [op for op in ops if wire.takes_text(op.query)]
    if text_ops:
        types.append(wire.batch_response_type(text_ops[0].result))
    _, components = msgspec.json.schema_components(types, ref_template=REF)
    paths: dict[str, Any] = {}
    for op in ops:
        _hint(components, op, ml)
        body = {"application/json": {"schema": {"$ref": REF.format(name=op.request.__name__)}}}
        if op.takes_files:
            name = f"{op.query.__name__}Form"
            components[name] = _form_schema(op, components)
            body["multipart/form-data"] = {"schema": {"$ref": REF.format(name=name)}}
        operation = _operation(op.summary, f"predict_{op.name.replace('-', '_')}", body,
                               op.response.__name__, PREDICT_ERRORS, settings, ml,
                               examples=_examples((examples or {}).get(op.name, [])))
        for index, path in enumerate(op.paths):
            paths[path] = {"post": operation if index == 0 else {
                **operation, "operationId": f"predict_{path.rsplit('/', 1)[1]}",
                "description": f"The same as {op.paths[0]} (the name the product spec "
                               "gives this route)."}}
    if text_ops:
        batch = text_ops[0]
        texts = components["BatchRequest"]["properties"]["texts"]
        texts["maxItems"] = ml.max_batch_texts
        texts["items"] = {"type": "string", **batch.query_hints(ml).get("text", {})}
        _batch_choices(text_ops, components)
        paths[wire.BATCH_ROUTE] = {"post": _operation(
            f"Many texts, one result per text, in order ({', '.join(o.name for o in text_ops)})",
            "predict_batch", {"application/json": {"schema": {"$ref": REF.format(
                name="BatchRequest")}}},
            wire.batch_response_type(batch.result).__name__, PREDICT_ERRORS, settings, ml)}
    for path, summary, response, errors in (
            ("/api/models", "Each model's state, origin, routes, load time and model card",
             "ModelsResponse", ("401", "429")),
            ("/health", "Overall health and per-model state (memory with a key)",
             "HealthResponse", ("503",)),
            ("/health/live", "Liveness: the process answers", "ProbeResponse", ()),
            ("/health/ready", "Readiness: warmed up and not draining (503 otherwise)",
             "ProbeResponse", ("503",)),
            ("/metrics", "Request and model metrics as JSON (Accept: text/plain for "
             "Prometheus)", "MetricsResponse", ("401",))):
        own = path in ("/health", "/health/ready")  # probes answer 503 with their own body
        paths[path] = {"get": _operation(summary, "get_" + path.strip("/").replace("/", "_"),
                                         None, response, errors, settings, ml,
                                         error_body=response if own else None)}
    paths["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"] = {
        "schema": {"type": "string"}}
    paths["/metrics/prometheus"] = {"get": {
        "summary": "Prometheus text exposition: model, request, process and Python metrics",
        "operationId": "get_metrics_prometheus",
        "responses": {"200": {"description": "OK", "content": {"text/plain": {
            "schema": {"type": "string"}}}}, "401": _error_response("401")},
        **_security(settings)}}
    paths.update(_inference_paths(ops, components, settings, ml))
    names = ", ".join(op.name for op in ops)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Real-time ML prediction API", "version": "1.0.0",
                 "description": f"Models served in-process ({names}). Every error is JSON "
                                "{error: {code, message, details, request_id}}. Batches hold "
                                f"up to {ml.max_batch_texts} texts; JSON bodies up to "
                                f"{settings.max_json_body_bytes} bytes, bodies with files up "
                                f"to {settings.max_body_bytes}."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    }


INFERENCE_ERRORS = {
    "400": "Bad request: wrong datatype, shape, data length, missing or unknown input, "
           "unknown parameter, invalid input",
    "401": "Missing or invalid API key (when keys are configured)",
    "404": "Unknown model, version or route",
    "405": "Method not allowed",
    "408": "The request body did not arrive within ML_BODY_TIMEOUT_S",
    "413": "Body over its route's limit",
    "429": "Rate limited, or too many wrong API keys (see Retry-After)",
    "503": "Model not ready, unavailable or at capacity (see Retry-After)",
    "504": "Model did not answer within the request's deadline",
}


def _inference_paths(ops: list[wire.Operation], components: dict[str, Any],
                     settings: ApiSettings, ml: Settings) -> dict[str, Any]:
    """The Open Inference Protocol's routes for these models (api.inference)."""
    _, found = msgspec.json.schema_components(
        [inference.ServerMetadata, inference.LiveResponse, inference.ReadyResponse,
         inference.ModelMetadata, inference.ModelReadyResponse, tensors.InferenceRequest,
         inference.InferenceResponse, inference.InferenceError], ref_template=REF)
    components.update(found)

    def get(summary: str, operation_id: str, response: str, errors: tuple[str, ...],
            protected: bool = True) -> dict[str, Any]:
        return {"get": {
            "summary": summary, "operationId": operation_id, "tags": ["inference (V2)"],
            "responses": {"200": _ok(response), **{s: _v2_error(s) for s in errors}},
            **(_security(settings) if protected else {})}}

    paths = {
        "/v2": get("Server metadata: name, version, protocol extensions", "v2_server",
                   "ServerMetadata", ("401", "429")),
        "/v2/health/live": get("Liveness", "v2_live", "LiveResponse", (), False),
        "/v2/health/ready": get("Readiness: warmed up and not draining (503 otherwise)",
                                "v2_ready", "ReadyResponse", ("503",), False),
    }
    for op in ops:
        sig = tensors.signature(op.query, op.result)
        key = op.name.replace("-", "_")
        base = f"/v2/models/{op.name}"
        paths[base] = get(f"{op.name}: inputs, outputs, versions, parameters",
                          f"v2_{key}_metadata", "ModelMetadata", ("401", "429"))
        paths[f"{base}/ready"] = get(f"Whether {op.name} is loaded and serving",
                                     f"v2_{key}_ready", "ModelReadyResponse",
                                     ("401", "429", "503"))
        described = "; ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in sig.inputs)
        params = ", ".join(f"{p.name} ({p.kind})" for p in sig.parameters) or "none"
        ok = _ok("InferenceResponse")
        ok["content"]["application/octet-stream"] = {"schema": {
            "type": "string", "format": "binary", "description": "With binary outputs: the "
            "JSON response (Inference-Header-Content-Length bytes), then each binary "
            "output's data."}}
        paths[f"{base}/infer"] = {"post": {
            "summary": f"Infer with {op.name} (Open Inference Protocol)",
            "description": f"Inputs: {described} (the first dimension is the batch; files "
                           "are base64 in JSON or raw with the binary tensor extension). "
                           f"Parameters: {params}.",
            "operationId": f"v2_{key}_infer", "tags": ["inference (V2)"],
            "parameters": [{
                "name": "X-Request-Timeout-Ms", "in": "header", "required": False,
                "description": "This request's deadline in milliseconds",
                "schema": {"type": "integer", "minimum": 1,
                           "maximum": int(settings.max_request_timeout_s * 1e3)}}, {
                "name": "Inference-Header-Content-Length", "in": "header",
                "required": False, "description": "Binary tensor extension: the length of "
                "the JSON part; the inputs' binary data follows it",
                "schema": {"type": "integer", "minimum": 0}}],
            # with Inference-Header-Content-Length, this JSON is followed by the inputs'
            # binary data (any media type)
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": REF.format(
                    name="InferenceRequest")}}}},
            "responses": {"200": ok, **{s: _v2_error(s) for s in INFERENCE_ERRORS}},
            **_security(settings)}}
    return paths


def _ok(response: str) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {
        "schema": {"$ref": REF.format(name=response)}}}}


def _v2_error(status: str) -> dict[str, Any]:
    return {"description": INFERENCE_ERRORS[status], "content": {"application/json": {
        "schema": {"$ref": REF.format(name="InferenceError")}}}}


def _operation(summary: str, operation_id: str, body: dict[str, Any] | None, response: str,
               errors: tuple[str, ...], settings: ApiSettings, ml: Settings, *,
               error_body: str | None = None,
               examples: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary, "operationId": operation_id,
        "responses": {"200": {"description": "OK", "content": {"application/json": {
            "schema": {"$ref": REF.format(name=response)}}}}},
    }
    for status in errors:
        operation["responses"][status] = _error_response(status, error_body)
    if body is not None:
        if examples:
            body["application/json"]["examples"] = examples
        operation["requestBody"] = {"required": True, "content": body}
        operation["parameters"] = [{
            "name": "X-Request-Timeout-Ms", "in": "header", "required": False,
            "description": "This request's deadline in milliseconds (default "
                           f"{ml.request_timeout_s * 1e3:g})",
            "schema": {"type": "integer", "minimum": 1,
                       "maximum": int(settings.max_request_timeout_s * 1e3)}}]
        operation["responses"]["200"]["headers"] = {"Server-Timing": {
            "description": "queue wait, compute and batch size (or a cache hit)",
            "schema": {"type": "string"}}}
        operation.update(_security(settings))
    elif response in ("ModelsResponse", "MetricsResponse"):
        operation.update(_security(settings))
    return operation


def _security(settings: ApiSettings) -> dict[str, Any]:
    return {"security": [{"bearer": []}, {"apiKey": []}]} if settings.api_keys else {}


def _error_response(status: str, body: str | None = None) -> dict[str, Any]:
    return {"description": ERRORS[status], "content": {"application/json": {
        "schema": {"$ref": REF.format(name=body or "ErrorResponse")}}}}


def _hint(components: dict[str, Any], op: wire.Operation, ml: Settings) -> None:
    """The model's setting-dependent input rules (text length, say) in its schema."""
    hints = op.query_hints(ml)
    properties = components[op.request.__name__].get("properties", {})
    for name, extra in hints.items():
        if name in properties:
            properties[name] = {**properties[name], **extra}


def _batch_choices(text_ops: list[wire.Operation], components: dict[str, Any]) -> None:
    """The batch's `model`: the text models by every name they answer to; its `options`:
    what those models take besides the text (see wire.batch_queries)."""
    batch = components["BatchRequest"]["properties"]
    batch["model"]["enum"] = [path.rsplit("/", 1)[1] for op in text_ops for path in op.paths]
    choices = []
    for op in text_ops:
        query = components[op.request.__name__]
        if wire.has_options_field(op.query):
            choices.append({k: v for k, v in query["properties"]["options"].items()
                            if k != "default"})
        else:
            choices.append({"type": "object", "additionalProperties": False, "properties": {
                k: v for k, v in query["properties"].items() if k != "text"},
                "required": [r for r in query.get("required", []) if r != "text"]})
    options = {k: v for k, v in batch["options"].items() if k in ("description", "default")}
    batch["options"] = {**options, **(choices[0] if len(choices) == 1 else {"anyOf": choices})}


def _form_schema(op: wire.Operation, components: dict[str, Any]) -> dict[str, Any]:
    """The multipart form: a binary part per file field, the query's other (scalar) fields
    as text parts."""
    body = components[op.request.__name__]
    properties = {name: {"type": "string", "format": "binary"} for name in op.files}
    for name, schema in body.get("properties", {}).items():
        if not name.endswith(("_base64", "_url")) and "$ref" not in schema:
            properties[name] = schema
    return {"title": f"{op.query.__name__} (multipart)", "type": "object",
            "required": list(op.files), "properties": properties,
            "description": "The file as a multipart part; the query's other fields as text "
                           "parts."}


def _examples(bodies: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not bodies:
        return None
    return {f"example{i + 1}": {"value": value} for i, value in enumerate(bodies)}
