"""A small client for the REST API (httpx), for notebooks, benchmarks and users.

`predict(name, ...)` calls any model's route with the fields of its query; the answer is
decoded into that model's response type (its result type, with `latency_ms` and `model`).
The typed shortcuts (`sentiment`, `image`, ...) are the same calls for the built-in models.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import msgspec

from api import schemas, wire


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


def _result_type(name: str) -> type[msgspec.Struct] | None:
    """The result type of a model (or alias) this process can import (None: decode as a
    plain dict)."""
    from ml.contract import model_class
    from ml.registry import available, resolve

    known = available()
    entry = known.get(name) or next((e for e in known.values() if name in e.aliases), None)
    if entry is None or entry.target is None:
        return None
    try:
        return model_class(resolve(entry.target)).Result
    except Exception:  # noqa: BLE001 - not importable here: plain dicts will do
        return None


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
        self._types: dict[str, type[msgspec.Struct] | None] = {}

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    # -- predictions ------------------------------------------------------------------------
    def predict(self, name: str, *, files: dict[str, bytes] | None = None,
                **fields: Any) -> Any:
        """Model `name`'s answer to the query made of `fields`; `files` sends bytes fields
        as a multipart upload (otherwise give them as `<field>_base64` or `<field>_url`)."""
        path = f"/api/predict/{name}"
        if files:
            data = {k: str(v) for k, v in fields.items()}
            response = self.http.post(path, files={k: (k, v) for k, v in files.items()},
                                      data=data)
            return self._decode(name, self._check(response), batch=False)
        return self._decode(name, self._check(self.http.post(path, json=fields)), batch=False)

    def batch(self, texts: list[str], *, model: str = "sentiment",
              **options: Any) -> Any:
        """One result per text, in order."""
        body = self._check(self.http.post(wire.BATCH_ROUTE, json={
            "texts": texts, "model": model, "options": options}))
        return self._decode(model, body, batch=True)

    def sentiment(self, text: str, *, detailed: bool = False) -> Any:
        """Sentiment of one text."""
        return self.predict("sentiment", text=text, options={"detailed": detailed})

    def image(self, image: bytes | Path | str, *, top_k: int = 5, upload: bool = False) -> Any:
        """Classify image bytes or a file (base64 JSON, or multipart with upload=True);
        a str starting with http(s):// is sent as image_url for the server to fetch."""
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            return self.predict("image", image_url=image, top_k=top_k)
        data = Path(image).read_bytes() if isinstance(image, (Path, str)) else image
        if upload:
            return self.predict("image", files={"image": data}, top_k=top_k)
        return self.predict("image", image_base64=base64.b64encode(data).decode(),
                            top_k=top_k)

    def recommend(self, user_id: str, *, category: str | None = None, limit: int = 10,
                  exclude_purchased: bool = True) -> Any:
        """Recommendations for a household (the product spec's route)."""
        return self.predict("recommend", user_id=user_id, context={"category": category},
                            limit=limit, exclude_purchased=exclude_purchased)

    # -- operations -------------------------------------------------------------------------
    def health(self) -> schemas.HealthResponse:
        """/health (a 503 'unhealthy' body is returned, not raised)."""
        return msgspec.json.decode(self.http.get("/health").content,
                                   type=schemas.HealthResponse)

    def ready(self) -> bool:
        """True when /health/ready answers 200."""
        return self.http.get("/health/ready").status_code == 200

    def models(self) -> schemas.ModelsResponse:
        """Each model's state and card."""
        return msgspec.convert(self._check(self.http.get("/api/models")),
                               schemas.ModelsResponse)

    def metrics(self) -> schemas.MetricsResponse:
        """The JSON metrics."""
        return msgspec.convert(self._check(self.http.get("/metrics")), schemas.MetricsResponse)

    # -- internals --------------------------------------------------------------------------
    def _decode(self, name: str, body: Any, *, batch: bool) -> Any:
        if name not in self._types:
            self._types[name] = _result_type(name)
        result = self._types[name]
        if result is None:
            return body
        kind = wire.batch_response_type(result) if batch else wire.response_type(result)
        return msgspec.convert(body, kind)

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
