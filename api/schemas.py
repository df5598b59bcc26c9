"""Request and response schemas: the handlers validate with them, /openapi.json shows them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ml.limits import MAX_LIMIT, MAX_TOP_K, MAX_USER_ID_CHARS


class Strict(BaseModel):
    """Request bodies: exact JSON types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Open(BaseModel):
    """Response bodies (documentation only; handlers build plain dicts)."""

    model_config = ConfigDict(extra="allow")


# -- sentiment ------------------------------------------------------------------------------

class SentimentOptions(Strict):
    detailed: bool = Field(False, description="Add class probabilities and driving terms.")


class SentimentRequest(Strict):
    text: str = Field(description="Text to classify (1 to ML_MAX_TEXT_CHARS characters).",
                      examples=["I love how smooth the ride was!"])
    options: SentimentOptions = Field(default_factory=lambda: SentimentOptions())


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
    texts: list[str] = Field(min_length=1, description="1 to ML_MAX_BATCH_TEXTS texts "
                                                       "(default 2000).")
    model: Literal["sentiment"] = "sentiment"
    options: SentimentOptions = Field(default_factory=lambda: SentimentOptions())


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
    image_url: str | None = Field(None, max_length=2048,
                                  description="http(s) URL of an image; private and "
                                              "loopback addresses are refused.")
    image_base64: str | None = Field(None, description="The image file, base64-encoded.")
    top_k: int = Field(5, ge=1, le=MAX_TOP_K)

    @model_validator(mode="after")
    def one_source(self) -> ImageRequest:
        if (self.image_url is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of image_url or image_base64")
        return self


class ImageUpload(BaseModel):
    """multipart/form-data alternative to the JSON body."""

    image: bytes = Field(json_schema_extra={"format": "binary"})
    top_k: int = Field(5, ge=1, le=MAX_TOP_K)


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
    category: str | None = Field(None, description="Department filter, e.g. PRODUCE.")


class RecommendRequest(Strict):
    user_id: str = Field(min_length=1, max_length=MAX_USER_ID_CHARS,
                         examples=["1234"], description="Household id; unknown ids get the "
                                                        "popular items (strategy 'popular').")
    context: RecommendContext = Field(default_factory=lambda: RecommendContext())
    limit: int = Field(10, ge=1, le=MAX_LIMIT)
    exclude_purchased: bool = True


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
    memory: dict[str, Any]
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
