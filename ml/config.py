"""Settings of the ml core, and the one way settings are read from the environment.

`EnvSettings` is a frozen dataclass whose fields each name their environment variable;
`from_env(environ)` builds it from a mapping (the process environment by default), so tests
pass a dict instead of patching `os.environ`. The ml core's own settings are `Settings`;
the HTTP layer has its own (`api.config.ApiSettings`) built the same way.

Per-model batcher limits are not fields: `ML_<MODEL>_MAX_BATCH`, `ML_<MODEL>_MAX_WAIT_MS`
and `ML_<MODEL>_MAX_QUEUE` are read for any model name, plugins included, and override the
defaults the model declares.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ml.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
IMAGE_RUNTIMES = ("auto", "onnxruntime", "torch")
BATCH_FIELDS = {"MAX_BATCH": ("max_batch", int, 1), "MAX_WAIT_MS": ("max_wait_ms", float, 0),
                "MAX_QUEUE": ("max_queue", int, 1)}
_BATCH_ENV = re.compile(r"^ML_([A-Z0-9_]+?)_(MAX_BATCH|MAX_WAIT_MS|MAX_QUEUE)$")
S = TypeVar("S", bound="EnvSettings")


def setting(default: Any, env: str, help: str, *, secret: bool = False,
            minimum: float | None = None) -> Any:
    """A settings field read from `env`, documented by `help`, checked against `minimum`."""
    meta = {"env": env, "help": help, "minimum": minimum}
    if callable(default):
        return field(default_factory=default, metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class EnvSettings:
    """Frozen settings read from environment variables (see `setting`)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            minimum = f.metadata.get("minimum")
            if minimum is not None and getattr(self, f.name) < minimum:
                raise ConfigError(f.metadata["env"], str(getattr(self, f.name)),
                                  f"a number >= {minimum:g}")

    @classmethod
    def from_env(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
        """Settings from `environ` (default: the process environment); blank is default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if "env" not in f.metadata:
                continue
            raw = env.get(f.metadata["env"])
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f, raw.strip())
        values.update(cls._extra_from_env(env))
        return cls(**values)

    @classmethod
    def _extra_from_env(cls, env: Mapping[str, str]) -> dict[str, Any]:
        return {}

    def replace(self: S, **changes: Any) -> S:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def describe(cls) -> list[dict[str, str]]:
        """Each setting's env var, default and help, for docs and `python -m ml info`."""
        rows = []
        for f in dataclasses.fields(cls):
            if "env" not in f.metadata:
                continue
            default = f.default_factory() if callable(f.default_factory) else f.default
            if isinstance(default, tuple):
                default = ",".join(default) if default else "(none)"
            if not f.repr:
                default = "(none)"
            if default is None:
                default = "(packaged)"
            rows.append({"name": f.name, "env": f.metadata["env"], "default": str(default),
                         "help": f.metadata["help"]})
        return rows + cls._extra_rows()

    @classmethod
    def _extra_rows(cls) -> list[dict[str, str]]:
        return []


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "realtime-ml"


@dataclass(frozen=True)
class Settings(EnvSettings):
    """The ml core's tunables: models, inputs, the engine. Built once, passed explicitly."""

    cache_dir: Path = setting(  # noqa: RUF009 - field() with env metadata
        _default_cache_dir, "ML_CACHE_DIR", "Where trained artifacts are cached.")
    device: str = setting("auto", "ML_DEVICE", "Image model device: auto, cpu or cuda.")
    image_weights: Path | None = setting(  # noqa: RUF009 - None default, env metadata
        None, "ML_IMAGE_WEIGHTS",
        "EfficientNet-Lite0 weights file (default: the one packaged with the requirements).")
    image_runtime: str = setting(
        "auto", "ML_IMAGE_RUNTIME",
        "Image model runtime: auto (ONNX Runtime on CPU, torch on CUDA), onnxruntime or torch.")
    torch_threads: int = setting(
        0, "ML_TORCH_THREADS",
        "Threads the image model's runtime may use (0: the runtime's default).", minimum=0)
    models: tuple[str, ...] = setting(
        (), "ML_MODELS",
        "Models to serve, comma-separated: names of built-in or installed models, or "
        "name=package.module:build for a local module (empty: every built-in and installed "
        "model).")
    sentiment_cnn: bool = setting(
        True, "ML_SENTIMENT_CNN", "Blend the sentiment model with its distilled word CNN for "
        "the texts the linear model is unsure of (~38% of tweets): 1.5 points more in-domain "
        "accuracy (off: the linear model alone, ~10% less model time and 21 MB less memory).")
    max_text_chars: int = setting(
        5000, "ML_MAX_TEXT_CHARS", "Longest text the sentiment model accepts.", minimum=1)
    max_image_bytes: int = setting(
        10 * 1024 * 1024, "ML_MAX_IMAGE_BYTES", "Largest encoded image accepted.", minimum=1)
    max_image_pixels: int = setting(
        40_000_000, "ML_MAX_IMAGE_PIXELS", "Largest decoded image (width x height).",
        minimum=1)
    max_image_aspect: float = setting(
        20.0, "ML_MAX_IMAGE_ASPECT", "Most elongated image accepted (long side / short side).",
        minimum=1)
    max_decode_bytes: int = setting(
        48 * 1024 * 1024, "ML_MAX_DECODE_BYTES",
        "Memory one image may need to decode; larger images are refused (422).", minimum=1024)
    decode_budget_bytes: int = setting(
        64 * 1024 * 1024, "ML_DECODE_BUDGET_BYTES",
        "Memory all image decodes in flight may hold together; others wait for room.",
        minimum=1024)
    max_batch_texts: int = setting(
        2000, "ML_MAX_BATCH_TEXTS", "Most queries one batch call (/api/predict/batch) may carry.",
        minimum=1)
    threadpool_size: int = setting(
        8, "ML_THREADPOOL_SIZE", "Worker threads for heavy model work off the event loop.",
        minimum=1)
    request_timeout_s: float = setting(
        10.0, "ML_REQUEST_TIMEOUT_S", "Deadline for one prediction.", minimum=0.01)
    warmup: bool = setting(True, "ML_WARMUP", "Load and warm every model at start-up.")
    batching: bool = setting(
        True, "ML_BATCHING", "Micro-batch concurrent requests (off: one model call each).")
    inline_budget_ms: float = setting(
        1.0, "ML_INLINE_BUDGET_MS", "Longest one model call may hold the event loop: cheaper "
        "models run there, batched per loop iteration (0: always on threads).", minimum=0.0)
    cache_entries: int = setting(
        4096, "ML_CACHE_ENTRIES", "Prediction cache size per model, in results (0: off).",
        minimum=0)
    # (model, limit, value) from ML_<MODEL>_MAX_BATCH / _MAX_WAIT_MS / _MAX_QUEUE
    batch_overrides: tuple[tuple[str, str, float], ...] = ()

    BATCH_HELP: ClassVar[dict[str, str]] = {
        "MAX_BATCH": "Most queries one call of <MODEL> joins (default: the model's).",
        "MAX_WAIT_MS": "Longest a batch of <MODEL> waits for more queries (0: a batch is what "
                       "queued meanwhile; default: the model's).",
        "MAX_QUEUE": "Queries of <MODEL> that may wait; more get 503 (default: the model's).",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.device not in DEVICES:
            raise ConfigError("ML_DEVICE", self.device, f"one of {', '.join(DEVICES)}")
        if self.image_runtime not in IMAGE_RUNTIMES:
            raise ConfigError("ML_IMAGE_RUNTIME", self.image_runtime,
                              f"one of {', '.join(IMAGE_RUNTIMES)}")
        if self.max_decode_bytes > self.decode_budget_bytes:
            raise ConfigError("ML_MAX_DECODE_BYTES", str(self.max_decode_bytes),
                              "at most ML_DECODE_BUDGET_BYTES")
        for model, name, value in self.batch_overrides:
            env, minimum = f"ML_{model.upper()}_{name.upper()}", BATCH_FIELDS[name.upper()][2]
            if value < minimum:
                raise ConfigError(env, f"{value:g}", f"a number >= {minimum}")

    @classmethod
    def _extra_from_env(cls, env: Mapping[str, str]) -> dict[str, Any]:
        overrides = []
        for key, raw in env.items():
            match = _BATCH_ENV.match(key)
            if match is None or not raw.strip():
                continue
            model = match[1].lower()
            name, kind, _ = BATCH_FIELDS[match[2]]
            try:
                value = kind(raw.strip())
            except ValueError:
                raise ConfigError(key, raw, "an integer" if kind is int else "a number") \
                    from None
            overrides.append((model, name, float(value)))
        return {"batch_overrides": tuple(sorted(overrides))} if overrides else {}

    @classmethod
    def _extra_rows(cls) -> list[dict[str, str]]:
        return [{"name": f"<model>_{key.lower()}", "env": f"ML_<MODEL>_{key}",
                 "default": "(the model's)", "help": text}
                for key, text in cls.BATCH_HELP.items()]

    def batch_overrides_for(self, model: str) -> dict[str, float]:
        """The limits ML_<MODEL>_* sets for `model` (name as in the registry)."""
        key = model.replace("-", "_")
        return {name: value for m, name, value in self.batch_overrides if m == key}

    def tuned(self, model: str, **limits: float) -> Settings:
        """A copy with batcher limits of `model` set (max_batch, max_wait_ms, max_queue)."""
        kept = [o for o in self.batch_overrides if not (o[0] == model and o[1] in limits)]
        return self.replace(batch_overrides=tuple(sorted(
            [*kept, *((model, name, float(value)) for name, value in limits.items())])))


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type
    env = f.metadata["env"]
    if kind in ("Path", "Path | None"):
        return Path(raw).expanduser()
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(env, raw, "an integer") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(env, raw, "a number") from None
    if kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(env, raw, "true or false")
    if kind == "tuple[str, ...]":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
