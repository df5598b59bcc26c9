"""The model contract: what every served model is, built-in or brought by a user.

A model is one class. It declares its query type (what a caller sends: the REST body, the
notebook's argument) and its result type (what it answers), both msgspec Structs, so that
every other layer derives what it needs from them: the REST route and its OpenAPI schemas,
the "try it" page's form, the CLI and the batch route. Then:

- `prepare(query) -> item`: the only validation (InvalidInput naming the field) and any
  per-request work such as decoding an image; `heavy_prepare` says whether that work is
  heavy enough to keep off an event loop;
- `predict(items) -> list[result]`: one vectorised call, one result per item, in order;
  never mutates shared state;
- `cache_key(query)`: what identifies a query's answer (None: not cacheable);
- `batch_limits`: the micro-batcher's defaults for this model (settings may override);
- `examples()`: representative queries (docs, the UI's defaults, warm-up), and
  `workload(n)`: many of them (benchmarks, load tests);
- `info()`: the model card; `warmup()`: a representative prediction.

`ModelBase` gives the defaults; a class method `build(settings, store)` (or a module-level
`build` function annotated to return the class) is the one place weights and data are read.
The registry (`ml.registry`) is the only list of models.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import msgspec

from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.errors import InvalidInput

Q = TypeVar("Q", bound=msgspec.Struct)
I = TypeVar("I")  # noqa: E741 - the prepared item type
R = TypeVar("R", bound=msgspec.Struct)


@dataclass(frozen=True)
class BatchLimits:
    """One model's micro-batcher: most items per call, wait for stragglers, queue bound."""

    max_batch: int = 16
    max_wait_ms: float = 0.0
    max_queue: int = 256


@runtime_checkable
class Model(Protocol):
    """What every served model provides (see the module docstring)."""

    name: str
    version: str
    Query: ClassVar[type[msgspec.Struct]]
    Result: ClassVar[type[msgspec.Struct]]
    batch_limits: BatchLimits
    heavy_prepare: bool

    def prepare(self, query: Any) -> Any: ...

    def predict(self, items: Sequence[Any]) -> list[Any]: ...

    def cache_key(self, query: Any) -> Hashable | None: ...

    def examples(self) -> list[Any]: ...

    def workload(self, count: int) -> list[Any]: ...

    def info(self) -> dict[str, Any]: ...

    def warmup(self) -> None: ...


class ModelBase(Generic[Q, I, R]):
    """Defaults for the contract: subclass it, set the class attributes, write `prepare`,
    `predict`, `examples`, `info` and a `build` class method."""

    name: ClassVar[str]
    version: ClassVar[str]
    Query: ClassVar[type[msgspec.Struct]]
    Result: ClassVar[type[msgspec.Struct]]
    batch_limits: ClassVar[BatchLimits] = BatchLimits()
    heavy_prepare: ClassVar[bool] = False
    # how people see it (page titles, the Overview's cards); optional
    title: ClassVar[str] = ""  # default: the name, capitalised
    icon: ClassVar[str] = "model_training"  # a Material Symbols name

    def prepare(self, query: Q) -> I:
        raise NotImplementedError

    def predict(self, items: Sequence[I]) -> list[R]:
        raise NotImplementedError

    def cache_key(self, query: Q) -> Hashable | None:
        """The query's JSON encoding: equal queries share an answer."""
        return msgspec.json.encode(query)

    def examples(self) -> list[Q]:
        raise NotImplementedError

    def workload(self, count: int) -> list[Q]:
        """`count` representative queries for load tests and benchmarks (default: the
        examples over and over; models with a corpus give varied ones)."""
        examples = self.examples()
        return [examples[i % len(examples)] for i in range(count)]

    def info(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def schema_hints(cls, settings: Settings) -> dict[str, dict[str, Any]]:
        """JSON Schema keywords that the settings add to the query's fields (a length
        limit read from the environment, say), for /openapi.json."""
        return {}

    def warmup(self) -> None:
        """Predict the examples, one at a time and as one batch."""
        items = [self.prepare(query) for query in self.examples()]
        for item in items:
            self.predict([item])
        self.predict(items)

    def __call__(self, query: Q) -> R:
        """prepare and predict one query, in the calling thread (no engine)."""
        result: R = self.predict([self.prepare(query)])[0]
        return result


Builder = Callable[[Settings, ArtifactStore], Model]


def call(model: Model, query: Any) -> Any:
    """prepare and predict one query, in the calling thread (no engine)."""
    return model.predict([model.prepare(query)])[0]


def query_of(cls: type[Any], fields: Mapping[str, Any], *, strict: bool = True) -> Any:
    """The model's query from plain values (nested dicts for nested structs), checked
    against every constraint its Query declares, as the REST API checks a body: InvalidInput
    naming the first value that does not fit. `strict=False` also takes text for numbers
    and booleans (command lines, form fields)."""
    try:
        return msgspec.convert(dict(fields), cls.Query, strict=strict)
    except msgspec.ValidationError as exc:
        message = str(exc)
        path = message.rpartition(" - at `$")[2].rstrip("`") if " - at `$" in message else ""
        raise InvalidInput(f"the query does not fit {cls.name}: {message}",
                           field=path.lstrip(".") or None) from None


def title_of(cls: type[Any]) -> str:
    """The model's title for people (its `title`, else its name)."""
    return getattr(cls, "title", "") or str(cls.name).replace("_", " ").capitalize()


def model_class(target: Any) -> type[Model]:
    """The model class behind a registered target: the class itself, an object with a
    `build` class method, or a `build` function annotated to return the class."""
    if isinstance(target, type):
        return target
    hints = typing.get_type_hints(target)
    returned = hints.get("return")
    if not isinstance(returned, type):
        raise TypeError(f"{target!r} is neither a model class nor a build function "
                        "annotated to return one")
    return returned


def builder_of(target: Any) -> Builder:
    """How to build the model behind `target` (see model_class)."""
    if isinstance(target, type):
        build = getattr(target, "build", None)
        if not callable(build):
            raise TypeError(f"model class {target.__name__} has no build(settings, store)")
        return build  # type: ignore[no-any-return]
    if callable(target):
        return target  # type: ignore[no-any-return]
    raise TypeError(f"{target!r} cannot build a model")


def check_class(cls: type[Any]) -> None:
    """TypeError unless `cls` declares the contract's types and methods."""
    for attribute in ("name", "version", "Query", "Result", "prepare", "predict", "info"):
        if not hasattr(cls, attribute):
            raise TypeError(f"model class {cls.__name__} has no {attribute!r}")
    for attribute in ("Query", "Result"):
        kind = getattr(cls, attribute)
        if not (isinstance(kind, type) and issubclass(kind, msgspec.Struct)):
            raise TypeError(f"{cls.__name__}.{attribute} must be a msgspec.Struct")
