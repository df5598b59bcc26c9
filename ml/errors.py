"""One error hierarchy for the ml core; callers map these to their own world (HTTP, UI, CLI)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class MLError(Exception):
    """Base class of every error the ml core raises on purpose."""

    code = "ml_error"

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class InvalidInput(MLError):
    """Raised when a caller's input cannot be predicted on (wrong type, empty, too big...)."""

    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        if field is not None:
            details["field"] = field
        super().__init__(message, details=details)
        self.field = field


class UnknownModel(MLError):
    """Raised when a model name is not in the registry."""

    code = "unknown_model"

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        super().__init__(
            f"unknown model {name!r}; known models: {', '.join(known)}",
            details={"model": name, "known": known},
        )


class ModelUnavailable(MLError):
    """Raised when a known model cannot serve: it failed to load or is disabled."""

    code = "model_unavailable"

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"model {name!r} is unavailable: {reason}",
                         details={"model": name, "reason": reason})


class ConfigError(MLError):
    """Raised when a setting has a value the service cannot run with."""

    code = "invalid_setting"

    def __init__(self, env: str, value: str, expected: str) -> None:
        super().__init__(f"{env}={value!r} is invalid: expected {expected}",
                         details={"setting": env, "value": value})


class Overloaded(MLError):
    """Raised when a model's queue is full; the caller should retry after a pause."""

    code = "overloaded"

    def __init__(self, name: str, retry_after_s: float = 1.0) -> None:
        super().__init__(f"model {name!r} is at capacity; retry shortly",
                         details={"model": name, "retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class DeadlineExceeded(MLError):
    """Raised when a prediction did not finish within its deadline."""

    code = "deadline_exceeded"

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(f"model {name!r} did not answer within {seconds:g}s",
                         details={"model": name, "deadline_s": seconds})


class InvalidWeights(MLError):
    """Raised when a weights file cannot be read as plain tensors: malformed, of a format or
    type this reader does not know, or referencing code beyond tensor rebuilding."""

    code = "invalid_weights"

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"weights file {path} refused: {reason}",
                         details={"path": str(path), "reason": reason})
        self.reason = reason
