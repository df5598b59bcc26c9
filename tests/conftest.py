"""Shared fixtures: one real registry per test session, caching into a temporary dir."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from ml.config import Settings
from ml.registry import Registry


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings with a private artifact cache (models train once per session)."""
    return Settings(cache_dir=tmp_path_factory.mktemp("artifacts"), device="cpu")


@pytest.fixture(scope="session")
def registry(settings: Settings) -> Iterator[Registry]:
    """The real registry, all three models."""
    yield Registry(settings)


@pytest.fixture(scope="session")
def sentiment(registry: Registry):  # type: ignore[no-untyped-def]
    return registry.get("sentiment")


@pytest.fixture(scope="session")
def image_model(registry: Registry):  # type: ignore[no-untyped-def]
    return registry.get("image")


@pytest.fixture(scope="session")
def recommender(registry: Registry):  # type: ignore[no-untyped-def]
    return registry.get("recommender")


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
