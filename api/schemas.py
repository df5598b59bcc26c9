"""Request and response schemas.

Requests are msgspec Structs: decoded straight from the body bytes in C, exact JSON types,
unknown fields refused, and validation stops at the first problem, so refusing a hostile
body (two million wrong items, 800k unknown keys) costs microseconds, not seconds. Responses
are documented with pydantic models. /openapi.json shows both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from ml.limits import MAX_LIMIT, MAX_TOP_K, MAX_USER_ID_CHARS


class Strict(msgspec.Struct, forbid_unknown_fields=True):
    """Request bodies: exact JSON types, unknown fields refused."""


class Open(BaseModel):
    """Response bodies (documentation only; handlers build plain dicts)."""

    model_config = ConfigDict(extra="allow")


# -- sentiment ------------------------------------------------------------------------------

class SentimentOptions(Strict):
    detailed: Annotated[bool, msgspec.Meta(
        description="Add class probabilities and driving terms.")] = False


class SentimentRequest(Strict):
    text: Annotated[str, msgspec.Meta(
        description="Text to classify (1 to ML_MAX_TEXT_CHARS characters).",
        examples=["I love how smooth the ride was!"])]
    options: SentimentOptions = msgspec.field(default_factory=SentimentOptions)


class Probabilities(Open):
    negative: float
    neutral: float
    positive: float


class Term(Open):
    term: str
    weight: float = Field(description="Push towards the predicted class (centred logit).")


class SentimentResponse(Open):
    sentiment: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0, le=1)
    score: float = Field(ge=-1, le=1, description="P(positive) - P(negative).")
    latency_ms: float = Field(description="Server-side model time.")
    model: str
    probabilities: Probabilities | None = None
    terms: list[Term] | None = None


# -- batch ----------------------------------------------------------------------------------

class BatchRequest(Strict):
    texts: Annotated[list[str], msgspec.Meta(
        min_length=1, description="1 to ML_MAX_BATCH_TEXTS texts (default 2000).")]
    model: Literal["sentiment"] = "sentiment"
    options: SentimentOptions = msgspec.field(default_factory=SentimentOptions)


class BatchItem(Open):
    sentiment: Literal["positive", "negative", "neutral"]
    confidence: float
    score: float
    probabilities: Probabilities | None = None
    terms: list[Term] | None = None


class BatchResponse(Open):
    results: list[BatchItem]
    count: int
    latency_ms: float
    model: str


# -- image ----------------------------------------------------------------------------------

class ImageRequest(Strict):
    image_url: Annotated[str, msgspec.Meta(
        max_length=2048,
        description="http(s) URL of an image; private and loopback addresses are refused."
    )] | None = None
    image_base64: Annotated[str, msgspec.Meta(
        description="The image file, base64-encoded.")] | None = None
    top_k: Annotated[int, msgspec.Meta(ge=1, le=MAX_TOP_K)] = 5

    def __post_init__(self) -> None:
        if (self.image_url is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of image_url or image_base64")


# multipart/form-data alternative to the JSON body (documentation: the handler reads it)
IMAGE_UPLOAD_SCHEMA: dict[str, Any] = {
    "title": "ImageUpload", "type": "object", "required": ["image"],
    "description": "multipart/form-data alternative to the JSON body.",
    "properties": {"image": {"type": "string", "format": "binary"},
                   "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K,
                             "default": 5}}}


class ImagePrediction(Open):
    label: str
    confidence: float = Field(ge=0, le=1)
    class_id: int


class ImageResponse(Open):
    predictions: list[ImagePrediction]
    width: int
    height: int
    latency_ms: float
    model: str


# -- recommendations ------------------------------------------------------------------------

class RecommendContext(Strict):
    category: Annotated[str, msgspec.Meta(
        max_length=64, description="Department filter, e.g. PRODUCE.")] | None = None


class RecommendRequest(Strict):
    user_id: Annotated[str, msgspec.Meta(
        min_length=1, max_length=MAX_USER_ID_CHARS, examples=["1234"],
        description="Household id; unknown ids get the popular items (strategy 'popular').")]
    context: RecommendContext = msgspec.field(default_factory=RecommendContext)
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = 10
    exclude_purchased: bool = True


REQUESTS: tuple[type[Strict], ...] = (SentimentRequest, BatchRequest, ImageRequest,
                                      RecommendRequest)


class RecommendedItem(Open):
    item_id: str
    score: float
    description: str
    department: str


class RecommendResponse(Open):
    recommendations: list[RecommendedItem]
    strategy: Literal["als", "popular", "fold_in"]
    user_id: str | None
    category: str | None
    latency_ms: float
    model: str


# -- operations -----------------------------------------------------------------------------

class ModelState(Open):
    name: str
    state: Literal["pending", "loading", "ready", "failed"]
    reason: str | None = None
    load_seconds: float | None = None
    version: str | None = None
    loads: int = Field(0, description="Times this process built the model (1: shared).")
    info: dict[str, Any] | None = None


class ModelsResponse(Open):
    models: list[ModelState]


class HealthResponse(Open):
    status: Literal["healthy", "degraded", "unhealthy"]
    uptime: float
    models: dict[str, Literal["pending", "loading", "ready", "failed"]]
    memory: dict[str, Any] | None = Field(
        None, description="Process and host memory; when API keys are configured, only "
                          "for a request that carries one.")
    ready: bool
    draining: bool


class ProbeResponse(Open):
    status: str


class MetricsResponse(Open):
    uptime_s: float
    requests: dict[str, Any]
    performance: dict[str, float]
    models: dict[str, Any]


class ErrorDetail(Open):
    code: str
    message: str
    details: dict[str, Any]
    request_id: str | None = None


class ErrorResponse(Open):
    error: ErrorDetail
