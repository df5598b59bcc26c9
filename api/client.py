"""A small typed client for the REST API (httpx), for notebooks, benchmarks and users."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx

from api import schemas


class ApiClientError(Exception):
    """Raised when the API answers with an error; carries its status, code and details."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any],
                 request_id: str | None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.request_id = request_id


class Client:
    """Calls the prediction API; one keep-alive connection pool per client.

    >>> with Client("http://127.0.0.1:8501") as api:
    ...     api.sentiment("I love it").sentiment
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8501", *, api_key: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout,
                                 transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    # -- predictions ------------------------------------------------------------------------
    def sentiment(self, text: str, *, detailed: bool = False) -> schemas.SentimentResponse:
        """Sentiment of one text."""
        body = self._post("/api/predict/sentiment",
                          {"text": text, "options": {"detailed": detailed}})
        return schemas.SentimentResponse.model_validate(body)

    def batch(self, texts: list[str], *, detailed: bool = False) -> schemas.BatchResponse:
        """Sentiment of many texts, in order."""
        body = self._post("/api/predict/batch", {"texts": texts, "model": "sentiment",
                                                 "options": {"detailed": detailed}})
        return schemas.BatchResponse.model_validate(body)

    def image(self, image: bytes | Path | str, *, top_k: int = 5,
              upload: bool = False) -> schemas.ImageResponse:
        """Classify image bytes or a file (base64 JSON, or multipart with upload=True);
        a str starting with http(s):// is sent as image_url for the server to fetch."""
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            body = self._post("/api/predict/image", {"image_url": image, "top_k": top_k})
            return schemas.ImageResponse.model_validate(body)
        data = Path(image).read_bytes() if isinstance(image, (Path, str)) else image
        if upload:
            response = self.http.post("/api/predict/image", files={"image": ("image", data)},
                                      data={"top_k": str(top_k)})
            return schemas.ImageResponse.model_validate(self._check(response))
        body = self._post("/api/predict/image",
                          {"image_base64": base64.b64encode(data).decode(), "top_k": top_k})
        return schemas.ImageResponse.model_validate(body)

    def recommend(self, user_id: str, *, category: str | None = None, limit: int = 10,
                  exclude_purchased: bool = True) -> schemas.RecommendResponse:
        """Recommendations for a household."""
        body = self._post("/api/predict/recommend", {
            "user_id": user_id, "context": {"category": category}, "limit": limit,
            "exclude_purchased": exclude_purchased})
        return schemas.RecommendResponse.model_validate(body)

    # -- operations -------------------------------------------------------------------------
    def health(self) -> schemas.HealthResponse:
        """/health (a 503 'unhealthy' body is returned, not raised)."""
        response = self.http.get("/health")
        return schemas.HealthResponse.model_validate(response.json())

    def ready(self) -> bool:
        """True when /health/ready answers 200."""
        return self.http.get("/health/ready").status_code == 200

    def models(self) -> schemas.ModelsResponse:
        """Each model's state and card."""
        return schemas.ModelsResponse.model_validate(self._check(self.http.get("/api/models")))

    def metrics(self) -> schemas.MetricsResponse:
        """The JSON metrics."""
        return schemas.MetricsResponse.model_validate(self._check(self.http.get("/metrics")))

    # -- internals --------------------------------------------------------------------------
    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        return self._check(self.http.post(path, json=payload))

    @staticmethod
    def _check(response: httpx.Response) -> Any:
        if response.status_code < 400:
            return response.json()
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = {"code": "http_error", "message": response.text[:200], "details": {}}
        raise ApiClientError(response.status_code, error.get("code", "http_error"),
                             error.get("message", ""), error.get("details", {}),
                             error.get("request_id"))
