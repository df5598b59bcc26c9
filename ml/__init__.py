"""The ml core: models, registry, engine, settings. Importing it loads no model and touches
no file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    from ml.contract import query_of
    from ml.engine import default_engine

    engine = default_engine()
    query = query_of(engine.registry.model_class(name), fields)
    return engine.predict(name, query).result


def predict_many(name: str, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """One result per row of query fields, through the process-wide engine, run as
    vectorised calls of up to ML_MAX_BATCH_TEXTS rows (a CSV, a DataFrame's records):
    `predict_many("sentiment", [{"text": "great"}, {"text": "awful"}])`. InvalidInput names
    the first row that does not fit, by its index."""
    from ml.contract import query_of
    from ml.engine import default_engine

    engine = default_engine()
    cls = engine.registry.model_class(name)
    queries = []
    for index, fields in enumerate(rows):
        try:
            queries.append(query_of(cls, fields))
        except InvalidInput as exc:
            raise InvalidInput(f"row {index}: {exc}", field=exc.field, index=index) from None
    step = engine.settings.max_batch_texts  # the engine's bound on one call; chunked here
    results = []
    for start in range(0, len(queries), step):
        try:
            served = engine.predict_many(name, queries[start:start + step])
        except InvalidInput as exc:
            index = start + exc.details.get("index", 0)
            message = exc.message.partition(": ")[2] or exc.message
            raise InvalidInput(f"row {index}: {message}", field=exc.field, index=index) from None
        results += [s.result for s in served]
    return results
