"""A peer a user might pick instead: the same trained sentiment pipeline behind a plain
FastAPI app that calls scikit-learn's `predict_proba` per request, the stock way."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from ml.config import Settings
from ml.registry import Registry


class SentimentBody(BaseModel):
    text: str


def create_app() -> FastAPI:
    """One worker's app over the cached pipeline (the harness sets ML_CACHE_DIR)."""
    model = Registry(Settings.from_env().replace(models=("sentiment",))).get("sentiment")
    pipeline = model.pipeline  # type: ignore[attr-defined]
    labels = [str(label) for label in pipeline.classes_]
    app = FastAPI()

    @app.post("/api/predict/sentiment")
    def predict(body: SentimentBody) -> dict[str, Any]:
        probabilities = pipeline.predict_proba([body.text])[0]
        best = int(probabilities.argmax())
        return {"sentiment": labels[best], "confidence": float(probabilities[best]),
                "score": float(probabilities[labels.index("positive")]
                               - probabilities[labels.index("negative")])}

    @app.get("/health/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app
