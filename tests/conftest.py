"""Shared fixtures: one real registry per test session, caching into a temporary dir."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from benchmarks.services import Server, running
from ml.config import Settings
from ml.contract import ModelBase
from ml.registry import Registry, default_registry
from ml.sentiment import SentimentQuery, SentimentResult
from ml.threads import single_threaded_blas

# As a serving process does at start, in the main thread: models that train in a warm-up
# thread then run under the same one-thread BLAS (see ml.threads).
single_threaded_blas()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings with a private artifact cache (models train once per session).

    The test process's environment points at it too, so the process-wide registry that the
    Streamlit pages and server.py use is this same registry, never the user's cache.
    """
    cache = tmp_path_factory.mktemp("artifacts")
    saved = {k: os.environ.get(k) for k in ("ML_CACHE_DIR", "ML_DEVICE")}
    os.environ.update({"ML_CACHE_DIR": str(cache), "ML_DEVICE": "cpu"})
    yield Settings.from_env()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def registry(settings: Settings) -> Registry:
    """The real, process-wide registry: all three models, loaded once per session."""
    reg = default_registry()
    assert reg.settings == settings
    return reg


@pytest.fixture(scope="session")
def sentiment(registry: Registry):  # type: ignore[no-untyped-def]
    return registry.get("sentiment")


@pytest.fixture(scope="session")
def image_model(registry: Registry):  # type: ignore[no-untyped-def]
    return registry.get("image")


@pytest.fixture(scope="session")
def recommender(registry: Registry):  # type: ignore[no-untyped-def]
    return registry.get("recommender")


def same(a: object, b: object, tolerance: float = 1e-6) -> bool:
    """Equal results, floats within `tolerance`: a batch sums in another order than a
    lone query, so scores may differ in their last bits."""
    import msgspec

    a, b = msgspec.to_builtins(a), msgspec.to_builtins(b)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tolerance
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, tolerance) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class SentimentStub(ModelBase[SentimentQuery, Any, SentimentResult]):
    """A test double of a text model's contract: a subclass gives prepare and predict."""

    name = "sentiment"
    version = "stub-v1"
    Query = SentimentQuery
    Result = SentimentResult

    def examples(self) -> list[SentimentQuery]:
        return [SentimentQuery("hi")]

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}

    def warmup(self) -> None:
        pass


def need_tool(found: bool, why: str) -> None:
    """Skip a test whose system tool is missing, locally; under CI=true the tool is part of
    the set-up (`make test` installs it), so its absence fails the test instead."""
    if found:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why}; CI must have it")
    pytest.skip(why)


@pytest.fixture(scope="session")
def torch_module():  # type: ignore[no-untyped-def]
    """torch, for tests of the CUDA path and of the torch reference network. It comes with
    requirements-gpu.txt, which `make test` installs: absent locally the test skips, under
    CI=true it fails."""
    import importlib.util

    need_tool(importlib.util.find_spec("torch") is not None,
              "torch is not installed (pip install -r requirements-gpu.txt)")
    import torch

    return torch


def photo(name: str) -> Image.Image:
    """A real photo shipped with scikit-image (chelsea, coffee, astronaut, rocket)."""
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """`image` encoded as `fmt` bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample photos saved as JPEG files."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee"):
        photo(name).save(folder / f"{name}.jpg", quality=92)
    return folder


@pytest.fixture(scope="session")
def one_process_server(settings: Settings, registry: Registry,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`make run`'s server (UI + API, uvicorn server:app) on 127.0.0.1, shared by the e2e
    and browser tests."""
    registry.warmup()  # the server then loads cached artifacts
    env = {"ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu"}
    with running("one-process", env, tmp_path_factory.mktemp("logs")) as server:
        yield server
