"""The ml core: models, registry, engine, settings. Importing it loads no model and touches
no file."""

from __future__ import annotations

from typing import Any

from ml.config import Settings
from ml.contract import BatchLimits, Model, ModelBase
from ml.errors import InvalidInput, MLError, ModelUnavailable, UnknownModel
from ml.registry import Registry, default_registry, get_model, list_models

__all__ = [
    "BatchLimits",
    "InvalidInput",
    "MLError",
    "Model",
    "ModelBase",
    "ModelUnavailable",
    "Registry",
    "Settings",
    "UnknownModel",
    "default_registry",
    "get_model",
    "list_models",
    "predict",
    "predict_many",
]


def predict(name: str, **fields: Any) -> Any:
    """Model `name`'s result for the query made of `fields`, through the process-wide
    engine (batching, cache, metrics): `predict("sentiment", text="what a great day")`."""
    from ml.engine import predict as through_engine

    return through_engine(name, **fields)


def predict_many(name: str, rows: Any) -> list[Any]:
    """One result per row of query fields, through the process-wide engine as one vectorised
    call: `predict_many("sentiment", [{"text": "great"}, {"text": "awful"}])`."""
    from ml.engine import predict_many as through_engine

    return through_engine(name, rows)
