"""One contract, checked for every registered model: the built-ins and the plugin alike."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import msgspec
import pytest

from api import wire
from ml.contract import Model, call
from ml.errors import InvalidInput
from ml.registry import Registry, available
from tests.conftest import same

NAMES = sorted(available())


@pytest.fixture(params=NAMES)
def named_model(request: pytest.FixtureRequest, registry: Registry) -> tuple[str, Model]:
    return request.param, registry.get(request.param)


def test_the_default_models_are_the_built_ins_and_the_plugin() -> None:
    assert NAMES == ["image", "recommender", "sentiment", "wine"]


def test_status_is_ready_with_load_time(named_model, registry: Registry) -> None:  # type: ignore[no-untyped-def]
    name, model = named_model
    status = registry.status(name)
    assert status.state == "ready"
    assert status.version == model.version and model.version
    assert status.load_seconds is not None and status.load_seconds > 0


def test_info_is_a_model_card(named_model) -> None:  # type: ignore[no-untyped-def]
    name, model = named_model
    info = model.info()
    assert info["name"] == name and info["version"] == model.version
    for key in ("task", "architecture", "source", "training", "evaluation", "limits",
                "headline"):
        assert info[key], key
    assert {"label", "value"} <= set(info["headline"])


def test_query_and_result_are_frozen_structs(named_model) -> None:  # type: ignore[no-untyped-def]
    _, model = named_model
    for kind in (model.Query, model.Result):
        assert issubclass(kind, msgspec.Struct) and kind.__struct_config__.frozen
    examples = model.examples()
    assert examples and all(isinstance(q, model.Query) for q in examples)
    result = call(model, examples[0])
    assert isinstance(result, model.Result)
    first = msgspec.structs.fields(result)[0].name
    with pytest.raises(AttributeError):
        setattr(result, first, None)


def test_predict_is_one_vectorised_call_with_one_result_per_item(named_model) -> None:  # type: ignore[no-untyped-def]
    _, model = named_model
    queries = model.examples() * 2
    items = [model.prepare(q) for q in queries]
    batch = model.predict(items)
    assert len(batch) == len(queries)
    for one, query in zip(batch, queries, strict=True):
        assert same(one, call(model, query))


def test_the_wire_shape_round_trips_every_example(named_model) -> None:  # type: ignore[no-untyped-def]
    name, model = named_model
    op = wire.operation(name, type(model))
    for query in model.examples():
        body = msgspec.json.decode(wire.json_body(op, query))
        decoded = msgspec.convert(body, op.request)
        if not op.takes_files:
            assert decoded == query
        encoded = wire.encode_prediction(call(model, query), 1.5, model.version)
        response = msgspec.json.decode(encoded, type=op.response)
        assert response.latency_ms == 1.5 and response.model == model.version


def test_a_wrong_typed_field_is_invalid_input(named_model) -> None:  # type: ignore[no-untyped-def]
    _, model = named_model
    example = model.examples()[0]
    first = msgspec.structs.fields(example)[0].name
    with pytest.raises(InvalidInput) as caught:
        model.prepare(msgspec.structs.replace(example, **{first: None}))
    assert caught.value.field


def test_cache_keys_tell_queries_apart(named_model) -> None:  # type: ignore[no-untyped-def]
    _, model = named_model
    examples = model.examples()
    assert model.cache_key(examples[0]) == model.cache_key(msgspec.structs.replace(examples[0]))
    keys = {model.cache_key(q) for q in examples}
    assert len(keys) == len(set(examples))


def test_concurrent_predictions_equal_serial_ones(named_model) -> None:  # type: ignore[no-untyped-def]
    _, model = named_model
    queries = model.examples()
    expected = [call(model, q) for q in queries]
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(pool.map(lambda _: [call(model, q) for q in queries], range(16)))
    for run in runs:
        assert all(same(a, b) for a, b in zip(run, expected, strict=True))


def test_warmup_changes_no_answer(named_model, registry: Registry) -> None:  # type: ignore[no-untyped-def]
    """A warmed model answers as a cold one. Both are fresh instances (from the cached
    artifacts): the session's model may have been warmed by earlier tests already, and
    predicting on it first would warm the paths the examples use."""
    name, _ = named_model
    cold, warmed = (Registry(registry.settings.replace(models=(name,))).get(name)
                    for _ in range(2))
    assert cold is not warmed
    warmed.warmup()
    for query in cold.examples():
        assert same(call(warmed, query), call(cold, query)), query


def test_workload_is_many_queries_of_the_model(named_model) -> None:  # type: ignore[no-untyped-def]
    _, model = named_model
    workload = model.workload(50)
    assert len(workload) == 50 and all(isinstance(q, model.Query) for q in workload)
    assert all(isinstance(call(model, q), model.Result) for q in workload[:5])
