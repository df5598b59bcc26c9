"""Settings: the one place that reads environment variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.errors import ConfigError

MODEL_NAMES = ("sentiment", "image", "recommender")
DEVICES = ("auto", "cpu", "cuda")


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "realtime-ml"


def _setting(default: Any, env: str, help: str) -> Any:
    meta = {"env": env, "help": help}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service; built once, passed explicitly, never mutated."""

    cache_dir: Path = _setting(  # noqa: RUF009 - field() with env metadata
        _default_cache_dir, "ML_CACHE_DIR", "Where trained artifacts are cached."
    )
    device: str = _setting("auto", "ML_DEVICE", "Image model device: auto, cpu or cuda.")
    torch_threads: int = _setting(
        0, "ML_TORCH_THREADS", "Threads torch may use (0: torch's default)."
    )
    models: tuple[str, ...] = _setting(
        MODEL_NAMES, "ML_MODELS", "Comma-separated models to serve."
    )
    max_text_chars: int = _setting(
        5000, "ML_MAX_TEXT_CHARS", "Longest text the sentiment model accepts."
    )
    max_image_bytes: int = _setting(
        10 * 1024 * 1024, "ML_MAX_IMAGE_BYTES", "Largest encoded image accepted."
    )
    max_image_pixels: int = _setting(
        40_000_000, "ML_MAX_IMAGE_PIXELS", "Largest decoded image (width x height)."
    )

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError("ML_DEVICE", self.device, f"one of {', '.join(DEVICES)}")
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ConfigError(
                "ML_MODELS", ",".join(self.models), f"a subset of {', '.join(MODEL_NAMES)}"
            )
        for name in ("torch_threads", "max_text_chars", "max_image_bytes", "max_image_pixels"):
            value = getattr(self, name)
            minimum = 0 if name == "torch_threads" else 1
            if value < minimum:
                raise ConfigError(_env_name(name), str(value), f"an integer >= {minimum}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f, raw.strip())
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def describe(cls) -> list[dict[str, str]]:
        """Each setting's env var, default and help, for docs and `python -m ml info`."""
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if callable(f.default_factory) else f.default
            if isinstance(default, tuple):
                default = ",".join(default)
            rows.append(
                {"name": f.name, "env": f.metadata["env"], "default": str(default),
                 "help": f.metadata["help"]}
            )
        return rows


def _env_name(field_name: str) -> str:
    return str(Settings.__dataclass_fields__[field_name].metadata["env"])


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type
    if kind == "Path":
        return Path(raw).expanduser()
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f.metadata["env"], raw, "an integer") from None
    if kind == "tuple[str, ...]":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
