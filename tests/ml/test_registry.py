"""The registry: the one list of models, built-in, installed as plugins, or named in
ML_MODELS; lazy, loaded once, failures recorded with their reason."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.contract import ModelBase
from ml.errors import ModelUnavailable, UnknownModel
from ml.registry import BUILTINS, Entry, Registry, available, installed


class EchoQuery(msgspec.Struct, frozen=True):
    value: int


class EchoResult(msgspec.Struct, frozen=True):
    value: int


class EchoModel(ModelBase[EchoQuery, int, EchoResult]):
    """A minimal model of the contract."""

    name = "echo"
    version = "echo-v1"
    Query = EchoQuery
    Result = EchoResult

    def __init__(self) -> None:
        self.warmed = False

    def prepare(self, query: EchoQuery) -> int:
        return query.value

    def predict(self, items: Sequence[int]) -> list[EchoResult]:
        return [EchoResult(i) for i in items]

    def examples(self) -> list[EchoQuery]:
        return [EchoQuery(1)]

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "evaluation": {}}

    def warmup(self) -> None:
        self.warmed = True


class SourModel(EchoModel):
    """Builds, but its warm-up prediction fails."""

    def warmup(self) -> None:
        raise RuntimeError("warm-up prediction failed")


class GatedBuilder:
    """Builds an EchoModel once its gate opens, counting builds."""

    def __init__(self, open_: bool = True) -> None:
        self.gate = threading.Event()
        if open_:
            self.gate.set()
        self.started = threading.Event()
        self.builds = 0
        self.lock = threading.Lock()

    def __call__(self, settings: Settings, store: ArtifactStore) -> EchoModel:
        with self.lock:
            self.builds += 1
        self.started.set()
        self.gate.wait(10)
        return EchoModel()


def echo(builder: Any) -> Entry:
    return Entry(builder, cls=EchoModel, origin="test")


def broken(settings: Settings, store: ArtifactStore) -> EchoModel:
    raise FileNotFoundError("weights file is missing")


@pytest.fixture
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(cache_dir=tmp_path)


def test_the_built_ins_and_the_installed_plugin_are_the_default(settings: Settings) -> None:
    registry = Registry(settings)
    assert registry.names() == ["sentiment", "image", "recommender", "wine"]
    assert registry.status("wine").origin == "plugin realtime-ml-wine"
    assert registry.status("sentiment").origin == "built-in"
    assert set(installed()) == {"wine"} and set(BUILTINS) <= set(available())
    for name in registry.names():  # every class imports without building the model
        assert registry.model_class(name).name == name
    assert all(s.state == "pending" for s in registry.statuses().values())


def test_ml_models_narrows_and_adds_local_modules(settings: Settings) -> None:
    registry = Registry(settings.replace(models=("sentiment", "vino=realtime_ml_wine.model:build")))
    assert registry.names() == ["sentiment", "vino"]
    assert registry.status("vino").origin == "ML_MODELS"
    assert registry.model_class("vino").name == "wine"
    with pytest.raises(UnknownModel):
        registry.get("image")
    assert Settings.from_env({"ML_MODELS": "sentiment, image"}).models == ("sentiment", "image")


def test_aliases_stand_for_their_model(settings: Settings) -> None:
    registry = Registry(settings)
    assert registry.aliases() == {"recommend": "recommender"}
    assert registry.canonical("recommend") == "recommender"
    with pytest.raises(UnknownModel):
        registry.canonical("recommendations")


@pytest.mark.parametrize(("spec", "fragment"), [
    pytest.param("typo", "no model named 'typo'", id="unknown-name"),
    pytest.param("gone=no_such_package.model:build", "ModuleNotFoundError", id="missing-module"),
    pytest.param("odd=ml.sentiment:nothing_here", "AttributeError", id="missing-attribute"),
    pytest.param("notamodel=ml.config:Settings", "has no 'name'", id="not-a-model"),
    pytest.param("Bad Name=realtime_ml_wine.model:build", "cannot be a model name",
                 id="bad-name"),
])
def test_a_model_that_cannot_load_is_failed_and_the_others_serve(settings: Settings,
                                                                 spec: str,
                                                                 fragment: str) -> None:
    registry = Registry(settings.replace(models=(spec, "vino=realtime_ml_wine.model:build")))
    name = spec.partition("=")[0]
    with pytest.raises(ModelUnavailable):
        registry.get(name)
    status = registry.status(name)
    assert status.state == "failed" and fragment in (status.reason or ""), status
    assert registry.get("vino").version == "wine-cultivar-v1"
    assert registry.warmup()["vino"].state == "ready"


def test_lazy_and_loaded_once_under_concurrency(settings: Settings) -> None:
    builder = GatedBuilder(open_=False)
    registry = Registry(settings, entries={"echo": echo(builder)})
    assert registry.status("echo").state == "pending"
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(registry.get("echo")))
               for _ in range(8)]
    for t in threads:
        t.start()
    assert builder.started.wait(5)
    assert registry.status("echo").state == "loading"  # the gate holds the build
    builder.gate.set()
    for t in threads:
        t.join()
    assert builder.builds == 1
    assert registry.load_count("echo") == 1
    assert len({id(m) for m in results}) == 1
    status = registry.status("echo")
    assert status.state == "ready" and status.version == "echo-v1"
    assert status.load_seconds is not None and status.load_seconds > 0


def test_failure_is_recorded_with_reason_and_not_retried(settings: Settings) -> None:
    registry = Registry(settings, entries={"bad": echo(broken), "echo": echo(GatedBuilder())})
    with pytest.raises(ModelUnavailable) as caught:
        registry.get("bad")
    assert "weights file is missing" in caught.value.message
    status = registry.status("bad")
    assert status.state == "failed"
    assert status.reason == "FileNotFoundError: weights file is missing"
    with pytest.raises(ModelUnavailable):
        registry.get("bad")
    assert registry.get("echo")(EchoQuery(1)) == EchoResult(1)


def test_warmup_loads_everything_and_records_failures(settings: Settings) -> None:
    """Warm-up builds and warms every model; one that fails to build, or whose warm-up
    prediction fails, is recorded as failed with its reason and served no more."""
    sour = Entry(lambda s, st: SourModel(), cls=SourModel, origin="test")
    registry = Registry(settings, entries={"bad": echo(broken), "echo": echo(GatedBuilder()),
                                           "sour": sour})
    assert not registry.ready
    statuses = registry.warmup()
    assert statuses["echo"].state == "ready"
    assert statuses["bad"].state == "failed"
    assert statuses["sour"].state == "failed"
    assert statuses["sour"].reason == "RuntimeError: warm-up prediction failed"
    assert registry.loaded("sour") is None
    with pytest.raises(ModelUnavailable):
        registry.get("sour")
    assert registry.get("echo").warmed  # type: ignore[attr-defined]
    assert not registry.ready


def test_reload_replaces_the_model(settings: Settings) -> None:
    builder = GatedBuilder()
    registry = Registry(settings, entries={"echo": echo(builder)})
    first = registry.get("echo")
    second = registry.reload("echo")
    assert first is not second
    assert builder.builds == 2


def test_a_builder_returning_the_wrong_class_fails(settings: Settings) -> None:
    registry = Registry(settings, entries={"echo": Entry(lambda s, st: object(),
                                                         cls=EchoModel)})
    with pytest.raises(ModelUnavailable):
        registry.get("echo")
    assert "not EchoModel" in (registry.status("echo").reason or "")


def test_unknown_model_lists_known_ones(settings: Settings) -> None:
    registry = Registry(settings, entries={"echo": echo(GatedBuilder())})
    with pytest.raises(UnknownModel) as caught:
        registry.get("gpt")
    assert caught.value.details == {"model": "gpt", "known": ["echo"]}
    with pytest.raises(UnknownModel):
        registry.status("gpt")
