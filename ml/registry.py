"""Model registry: find models by name, load each once (lazily, thread-safely), report state."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.errors import ModelUnavailable, UnknownModel

logger = logging.getLogger(__name__)

State = Literal["pending", "loading", "ready", "failed"]


class Model(Protocol):
    """What every served model provides."""

    name: str
    version: str

    def predict(self, batch: Sequence[Any]) -> list[Any]:
        """One result per input, in order; raises InvalidInput for bad input."""

    def info(self) -> dict[str, Any]:
        """Name, version, data/weights source and evaluation figures."""

    def warmup(self) -> None:
        """Run a representative prediction so the first real call is not slow."""


Builder = Callable[[Settings, ArtifactStore], Model]

# The one place models are registered: name -> "module:function" building it. Resolved on
# first use so that importing ml stays cheap (and torch is imported only on CUDA).
BUILDERS: dict[str, str] = {
    "sentiment": "ml.sentiment:build",
    "image": "ml.image:build",
    "recommender": "ml.recommender:build",
}


@dataclass(frozen=True)
class ModelStatus:
    """A model's load state, as /health and the UI report it."""

    name: str
    state: State
    reason: str | None = None
    load_seconds: float | None = None
    version: str | None = None


def resolve_builder(path: str) -> Builder:
    """Import "module:function" and return the function."""
    module, _, attr = path.partition(":")
    builder: Builder = getattr(importlib.import_module(module), attr)
    return builder


class Registry:
    """Loads and holds the models of one process; share one instance between UI and API."""

    def __init__(
        self,
        settings: Settings | None = None,
        builders: Mapping[str, Builder | str] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        chosen = builders if builders is not None else BUILDERS
        if builders is None:
            chosen = {n: b for n, b in chosen.items() if n in self.settings.models}
        self._builders = dict(chosen)
        self.store = ArtifactStore(self.settings.cache_dir)
        self._models: dict[str, Model] = {}
        self._status = {name: ModelStatus(name, "pending") for name in self._builders}
        self._locks = {name: threading.Lock() for name in self._builders}
        self._status_lock = threading.Lock()
        self._loads = dict.fromkeys(self._builders, 0)

    def names(self) -> list[str]:
        """Registered model names, in registration order."""
        return list(self._builders)

    def get(self, name: str) -> Model:
        """The loaded model `name`, loading it first if needed."""
        model = self._models.get(name)
        if model is not None:
            return model
        if name not in self._builders:
            raise UnknownModel(name, self._builders)
        with self._locks[name]:
            model = self._models.get(name)
            if model is not None:
                return model
            status = self._status[name]
            if status.state == "failed":
                raise ModelUnavailable(name, status.reason or "failed to load")
            return self._load(name)

    def loaded(self, name: str) -> bool:
        """True if model `name` is loaded now (get() will not block)."""
        return name in self._models

    def _load(self, name: str) -> Model:
        self._set(ModelStatus(name, "loading"))
        started = time.perf_counter()
        try:
            builder = self._builders[name]
            if isinstance(builder, str):
                builder = resolve_builder(builder)
            self._loads[name] += 1
            model = builder(self.settings, self.store)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            logger.exception("model %s failed to load", name)
            self._set(ModelStatus(name, "failed", reason=reason))
            raise ModelUnavailable(name, reason) from exc
        seconds = time.perf_counter() - started
        self._models[name] = model
        self._set(ModelStatus(name, "ready", load_seconds=seconds, version=model.version))
        logger.info("model %s ready in %.2fs", name, seconds)
        return model

    def reload(self, name: str) -> Model:
        """Forget model `name` (also a failed one) and load it again."""
        if name not in self._builders:
            raise UnknownModel(name, self._builders)
        with self._locks[name]:
            self._models.pop(name, None)
            return self._load(name)

    def status(self, name: str) -> ModelStatus:
        """Model `name`'s current load state."""
        if name not in self._status:
            raise UnknownModel(name, self._builders)
        return self._status[name]

    def load_count(self, name: str) -> int:
        """How many times model `name` has been built in this registry (1 when shared)."""
        if name not in self._loads:
            raise UnknownModel(name, self._builders)
        return self._loads[name]

    def statuses(self) -> dict[str, ModelStatus]:
        """Every model's load state."""
        with self._status_lock:
            return dict(self._status)

    def warmup(self, names: Iterable[str] | None = None) -> dict[str, ModelStatus]:
        """Load the models and run one prediction each; failures are recorded, not raised."""
        for name in names if names is not None else self.names():
            try:
                self.get(name).warmup()
            except ModelUnavailable:
                continue
        return self.statuses()

    @property
    def ready(self) -> bool:
        """True once every registered model is loaded."""
        return all(s.state == "ready" for s in self.statuses().values())

    def _set(self, status: ModelStatus) -> None:
        with self._status_lock:
            self._status[status.name] = status


_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry (settings from the environment), created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Registry()
        return _default


def get_model(name: str) -> Model:
    """Model `name` from the process-wide registry."""
    return default_registry().get(name)


def list_models() -> list[ModelStatus]:
    """Every model of the process-wide registry with its load state."""
    return list(default_registry().statuses().values())
