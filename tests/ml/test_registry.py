"""Registry behaviour with small injected builders (the real models are covered elsewhere)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.errors import ModelUnavailable, UnknownModel
from ml.registry import BUILDERS, Registry, resolve_builder


class EchoModel:
    """A minimal model satisfying the protocol."""

    name = "echo"
    version = "echo-v1"

    def __init__(self) -> None:
        self.warmed = False

    def predict(self, batch: Sequence[Any]) -> list[Any]:
        return list(batch)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "evaluation": {}}

    def warmup(self) -> None:
        self.warmed = True


class SlowBuilder:
    """Builds an EchoModel after a delay, counting builds."""

    def __init__(self, delay: float = 0.2) -> None:
        self.delay = delay
        self.builds = 0
        self.lock = threading.Lock()

    def __call__(self, settings: Settings, store: ArtifactStore) -> EchoModel:
        with self.lock:
            self.builds += 1
        time.sleep(self.delay)
        return EchoModel()


def broken(settings: Settings, store: ArtifactStore) -> EchoModel:
    raise FileNotFoundError("weights file is missing")


@pytest.fixture
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(cache_dir=tmp_path)


def test_every_configured_model_is_registered() -> None:
    assert set(BUILDERS) == {"sentiment", "image", "recommender"}
    for path in BUILDERS.values():
        assert callable(resolve_builder(path))


def test_settings_choose_which_models_are_served(settings: Settings) -> None:
    registry = Registry(settings.replace(models=("sentiment",)))
    assert registry.names() == ["sentiment"]
    with pytest.raises(UnknownModel):
        registry.get("image")


def test_lazy_and_loaded_once_under_concurrency(settings: Settings) -> None:
    builder = SlowBuilder()
    registry = Registry(settings, builders={"echo": builder})
    assert registry.status("echo").state == "pending"
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(registry.get("echo")))
               for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    assert registry.status("echo").state == "loading"
    for t in threads:
        t.join()
    assert builder.builds == 1
    assert registry.load_count("echo") == 1
    assert len({id(m) for m in results}) == 1
    status = registry.status("echo")
    assert status.state == "ready"
    assert status.version == "echo-v1"
    assert status.load_seconds is not None and status.load_seconds >= 0.2


def test_failure_is_recorded_with_reason_and_not_retried(settings: Settings) -> None:
    registry = Registry(settings, builders={"bad": broken, "echo": SlowBuilder(0)})
    with pytest.raises(ModelUnavailable) as caught:
        registry.get("bad")
    assert "weights file is missing" in caught.value.message
    status = registry.status("bad")
    assert status.state == "failed"
    assert status.reason == "FileNotFoundError: weights file is missing"
    with pytest.raises(ModelUnavailable):
        registry.get("bad")
    assert registry.get("echo").predict([1]) == [1]


def test_warmup_loads_everything_and_records_failures(settings: Settings) -> None:
    registry = Registry(settings, builders={"bad": broken, "echo": SlowBuilder(0)})
    assert not registry.ready
    statuses = registry.warmup()
    assert statuses["echo"].state == "ready"
    assert statuses["bad"].state == "failed"
    assert registry.get("echo").warmed  # type: ignore[attr-defined]
    assert not registry.ready


def test_reload_replaces_the_model(settings: Settings) -> None:
    builder = SlowBuilder(0)
    registry = Registry(settings, builders={"echo": builder})
    first = registry.get("echo")
    second = registry.reload("echo")
    assert first is not second
    assert builder.builds == 2


def test_unknown_model_lists_known_ones(settings: Settings) -> None:
    registry = Registry(settings, builders={"echo": SlowBuilder(0)})
    with pytest.raises(UnknownModel) as caught:
        registry.get("gpt")
    assert caught.value.details == {"model": "gpt", "known": ["echo"]}
    with pytest.raises(UnknownModel):
        registry.status("gpt")
