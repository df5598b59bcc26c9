"""The REST shapes of the API's own endpoints (the models' are derived: `api.wire`).

msgspec Structs, used both to encode the responses and to document them in /openapi.json.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

State = Literal["pending", "loading", "ready", "failed"]


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    code: Annotated[str, msgspec.Meta(description="Stable, machine-readable error code.")]
    message: Annotated[str, msgspec.Meta(description="What went wrong, for people.")]
    details: dict[str, Any]
    request_id: Annotated[str, msgspec.Meta(
        description="The request's id (X-Request-Id): quote it when reporting a problem. "
                    "Absent only where no request id exists yet (a refused request head).")
    ] | None = None


class ErrorResponse(msgspec.Struct):
    """Every error the API answers with."""

    error: ErrorDetail


class ProbeResponse(msgspec.Struct):
    status: str


class HealthResponse(msgspec.Struct, omit_defaults=True):
    status: Literal["healthy", "degraded", "unhealthy"]
    uptime: float
    models: dict[str, State]
    ready: bool
    draining: bool
    memory: Annotated[dict[str, float], msgspec.Meta(
        description="Process and host memory; when API keys are configured, only for a "
                    "request that carries one.")] | None = None
    replicas: Annotated[dict[str, int], msgspec.Meta(
        description="Running replicas of each model, on a Ray Serve cluster (absent in one "
                    "process).")] | None = None


class ModelState(msgspec.Struct, omit_defaults=True):
    name: str
    state: State
    origin: Annotated[str, msgspec.Meta(
        description="built-in, plugin <distribution>, or ML_MODELS")]
    routes: list[str]
    loads: Annotated[int, msgspec.Meta(
        description="Times this process built the model (1: shared by UI and API).")]
    reason: str | None = None
    load_seconds: float | None = None
    version: str | None = None
    info: Annotated[dict[str, Any], msgspec.Meta(description="The model card.")] | None = None


class ModelsResponse(msgspec.Struct):
    models: list[ModelState]


class MetricsResponse(msgspec.Struct):
    uptime_s: float
    requests: dict[str, Any]
    performance: dict[str, float]
    models: dict[str, Any]
    engine: dict[str, Any]


IMAGE_FORM_NOTE = "multipart/form-data: the file fields, and the query's other fields as text"
