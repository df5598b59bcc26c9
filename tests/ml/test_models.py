"""One contract, checked for every registered model."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ml.errors import InvalidInput
from ml.recommender import RecommendRequest
from ml.registry import BUILDERS
from tests.conftest import photo

VERSIONS = {"sentiment": "sentiment-v1", "image": "image-classifier-v1",
            "recommender": "recommender-v1"}


def sample_inputs(name: str, model: Any) -> list[Any]:
    if name == "sentiment":
        return ["I love it", "terrible service", "the bus comes at nine", "great!!"]
    if name == "image":
        return [photo("coffee"), photo("chelsea")]
    users = model.known_users()
    return [RecommendRequest(users[0]), RecommendRequest("unknown", limit=3),
            RecommendRequest(users[1], category="produce")]


def bad_input(name: str) -> Any:
    return {"sentiment": "", "image": b"not an image",
            "recommender": RecommendRequest("1", limit=0)}[name]


@pytest.fixture(params=sorted(BUILDERS))
def named_model(request: pytest.FixtureRequest, registry) -> tuple[str, Any]:  # type: ignore[no-untyped-def]
    return request.param, registry.get(request.param)


def test_status_is_ready_with_load_time(named_model, registry) -> None:  # type: ignore[no-untyped-def]
    name, model = named_model
    status = registry.status(name)
    assert status.state == "ready"
    assert status.version == VERSIONS[name] == model.version
    assert status.load_seconds is not None and status.load_seconds > 0


def test_info_is_a_model_card(named_model) -> None:  # type: ignore[no-untyped-def]
    name, model = named_model
    info = model.info()
    assert info["name"] == name
    assert info["version"] == VERSIONS[name]
    for key in ("task", "architecture", "source", "training", "evaluation", "limits"):
        assert info[key], key


def test_predict_returns_one_frozen_result_per_input(named_model) -> None:  # type: ignore[no-untyped-def]
    name, model = named_model
    inputs = sample_inputs(name, model)
    results = model.predict(inputs)
    assert isinstance(results, list) and len(results) == len(inputs)
    for result in results:
        assert dataclasses.is_dataclass(result)
        field = dataclasses.fields(result)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(result, field, None)


def test_bad_input_raises_invalid_input(named_model) -> None:  # type: ignore[no-untyped-def]
    name, model = named_model
    with pytest.raises(InvalidInput):
        model.predict([bad_input(name)])


def test_concurrent_predictions_equal_serial_ones(named_model) -> None:  # type: ignore[no-untyped-def]
    name, model = named_model
    inputs = sample_inputs(name, model)
    expected = model.predict(inputs)
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(pool.map(lambda _: model.predict(inputs), range(16)))
    for run in runs:
        if name == "image":  # float sums may differ in the last bits between batch shapes
            assert [[p.label for p in r.predictions] for r in run] == \
                   [[p.label for p in r.predictions] for r in expected]
        else:
            assert run == expected


def test_warmup_runs(named_model) -> None:  # type: ignore[no-untyped-def]
    _, model = named_model
    model.warmup()
