"""The ml core: models, registry, settings. Importing it loads no model and touches no file."""

from __future__ import annotations

from ml.config import Settings
from ml.errors import InvalidInput, MLError, ModelUnavailable, UnknownModel
from ml.registry import Registry, default_registry, get_model, list_models

__all__ = [
    "InvalidInput",
    "MLError",
    "ModelUnavailable",
    "Registry",
    "Settings",
    "UnknownModel",
    "default_registry",
    "get_model",
    "list_models",
]
