"""The registry: the one list of models, built-in and brought from outside.

Where models come from, in order:

- the built-ins below;
- every installed distribution's entry points in the group `realtime_ml.models`
  (`name = "package.module:build"` or `"package.module:ModelClass"`);
- `ML_MODELS`, which narrows that list to the names it gives, and may add local modules
  that need no packaging as `name=package.module:build`.

A model is imported and built on first use (lazily, once, thread-safely). One that fails to
import or build is `failed` with its reason, like any other model; it never stops the
others or the server.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.contract import Model, builder_of, check_class, model_class
from ml.errors import ModelUnavailable, UnknownModel

logger = logging.getLogger(__name__)

State = Literal["pending", "loading", "ready", "failed"]
ENTRY_POINTS = "realtime_ml.models"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
RESERVED = frozenset({"batch"})  # a route of its own: /api/predict/batch


@dataclass(frozen=True)
class Entry:
    """A registered model: where it comes from and the other names it answers to."""

    target: str | Any  # "module:attribute", or the class / build function itself
    aliases: tuple[str, ...] = ()
    origin: str = "built-in"
    cls: type | None = None  # the model class, when `target` is a bare function

    @classmethod
    def of(cls, model: Any, **extra: Any) -> Entry:
        """An entry serving an object built already (an injected model, in tests)."""
        return cls(lambda settings, store: model, cls=type(model), origin="given", **extra)


# The built-in models. The product spec names the recommender's route
# /api/predict/recommend; the model is the recommender everywhere else, and "recommend" is
# its alias (routes, the CLI and the engine accept either).
BUILTINS: dict[str, Entry] = {
    "sentiment": Entry("ml.sentiment:build"),
    "image": Entry("ml.image:build"),
    "recommender": Entry("ml.recommender:build", aliases=("recommend",)),
}


@dataclass(frozen=True)
class ModelStatus:
    """A model's load state, as /health and the UI report it."""

    name: str
    state: State
    reason: str | None = None
    load_seconds: float | None = None
    version: str | None = None
    origin: str = "built-in"


def installed() -> dict[str, Entry]:
    """Models that installed distributions register under the `realtime_ml.models` group."""
    found = {}
    for point in metadata.entry_points(group=ENTRY_POINTS):
        dist = getattr(point, "dist", None)
        found[point.name] = Entry(point.value, origin=f"plugin {dist.name if dist else '?'}")
    return found


def available(models: Iterable[str] = ()) -> dict[str, Entry]:
    """The models to serve: built-ins and plugins, narrowed (or extended) by `models`."""
    known = {**BUILTINS, **installed()}
    chosen = list(models)
    if not chosen:
        return known
    picked: dict[str, Entry] = {}
    for spec in chosen:
        name, _, target = spec.partition("=")
        name = name.strip()
        if target:
            picked[name] = Entry(target.strip(), origin="ML_MODELS")
        elif name in known:
            picked[name] = known[name]
        else:
            picked[name] = Entry(None, origin="ML_MODELS")  # reported as failed
    return picked


def resolve(target: str | Any) -> Any:
    """Import "module:attribute" and return the attribute (objects are returned as is)."""
    if not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"{target!r} is not of the form package.module:build")
    found = importlib.import_module(module)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


class Registry:
    """Loads and holds the models of one process; share one instance between UI and API."""

    def __init__(self, settings: Settings | None = None,
                 entries: Mapping[str, Entry | Any] | None = None) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        chosen = available(self.settings.models) if entries is None else entries
        self._entries = {name: e if isinstance(e, Entry) else Entry(e, origin="given")
                         for name, e in chosen.items()}
        self.store = ArtifactStore(self.settings.cache_dir)
        self._models: dict[str, Model] = {}
        self._classes: dict[str, type[Model]] = {}
        self._status = {name: ModelStatus(name, "pending", origin=entry.origin)
                        for name, entry in self._entries.items()}
        self._locks = {name: threading.Lock() for name in self._entries}
        self._status_lock = threading.Lock()
        self._loads = dict.fromkeys(self._entries, 0)
        self._aliases = {alias: name for name, entry in self._entries.items()
                         for alias in entry.aliases if alias not in self._entries}
        for name, entry in self._entries.items():
            problem = self._problem(name, entry)
            if problem:
                self._set(ModelStatus(name, "failed", reason=problem, origin=entry.origin))

    def _problem(self, name: str, entry: Entry) -> str | None:
        if entry.target is None:
            return (f"no model named {name!r}: not built in ({', '.join(BUILTINS)}) and no "
                    f"installed distribution registers it in {ENTRY_POINTS}")
        if not NAME.match(name) or name in RESERVED:
            return f"{name!r} cannot be a model name (lowercase letters, digits, - and _)"
        return None

    # -- names ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Registered model names, in registration order."""
        return list(self._entries)

    def aliases(self) -> dict[str, str]:
        """Other names -> the model they stand for."""
        return dict(self._aliases)

    def canonical(self, name: str) -> str:
        """The model's name for `name` or one of its aliases; UnknownModel otherwise."""
        if name in self._entries:
            return name
        found = self._aliases.get(name)
        if found is None:
            raise UnknownModel(name, self._entries)
        return found

    def origin(self, name: str) -> str:
        return self._entries[self.canonical(name)].origin

    # -- classes and instances ----------------------------------------------------------------
    def model_class(self, name: str) -> type[Model]:
        """The model's class (its Query and Result types), imported but not built;
        ModelUnavailable if it cannot be imported."""
        name = self.canonical(name)
        found = self._classes.get(name)
        if found is not None:
            return found
        status = self._status[name]
        if status.state == "failed" and name not in self._classes:
            raise ModelUnavailable(name, status.reason or "failed to load")
        try:
            entry = self._entries[name]
            cls = entry.cls or model_class(resolve(entry.target))
            check_class(cls)
        except Exception as exc:
            self._fail(name, exc)
            raise ModelUnavailable(name, self._status[name].reason or "") from exc
        self._classes[name] = cls
        return cls

    def get(self, name: str) -> Model:
        """The loaded model `name` (or an alias), loading it first if needed."""
        model = self._models.get(name)
        if model is not None:
            return model
        name = self.canonical(name)
        with self._locks[name]:
            model = self._models.get(name)
            if model is not None:
                return model
            status = self._status[name]
            if status.state == "failed":
                raise ModelUnavailable(name, status.reason or "failed to load")
            return self._load(name)

    def loaded(self, name: str) -> Model | None:
        """Model `name` if it is loaded now (so that using it will not block), else None."""
        return self._models.get(name)

    def _load(self, name: str) -> Model:
        entry = self._entries[name]
        self._set(ModelStatus(name, "loading", origin=entry.origin))
        started = time.perf_counter()
        try:
            cls = self.model_class(name)
            build = builder_of(resolve(entry.target))
            self._loads[name] += 1
            model = build(self.settings, self.store)
            if not isinstance(model, cls):
                raise TypeError(f"the builder of {name} returned {type(model).__name__}, "
                                f"not {cls.__name__}")
        except ModelUnavailable:
            raise
        except Exception as exc:
            self._fail(name, exc)
            raise ModelUnavailable(name, self._status[name].reason or "") from exc
        seconds = time.perf_counter() - started
        self._models[name] = model
        self._set(ModelStatus(name, "ready", load_seconds=seconds, version=model.version,
                              origin=entry.origin))
        logger.info("model %s ready in %.2fs", name, seconds)
        return model

    def _fail(self, name: str, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        logger.error("model %s failed to load: %s", name, reason, exc_info=exc)
        self._set(ModelStatus(name, "failed", reason=reason, origin=self._entries[name].origin))

    def reload(self, name: str) -> Model:
        """Forget model `name` (also a failed one) and load it again."""
        name = self.canonical(name)
        with self._locks[name]:
            self._models.pop(name, None)
            self._classes.pop(name, None)
            if self._problem(name, self._entries[name]) is None:
                self._set(ModelStatus(name, "pending", origin=self._entries[name].origin))
            return self._load(name)

    # -- state --------------------------------------------------------------------------------
    def status(self, name: str) -> ModelStatus:
        """Model `name`'s current load state."""
        return self._status[self.canonical(name)]

    def load_count(self, name: str) -> int:
        """How many times model `name` has been built in this registry (1 when shared)."""
        return self._loads[self.canonical(name)]

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
            except Exception as exc:  # noqa: BLE001 - a model whose warm-up breaks has failed
                self._models.pop(name, None)
                self._fail(name, exc)
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

