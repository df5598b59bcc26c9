"""The serving engine: the same answers as the models themselves, with batching and caching
on or off, synchronous and async; batch sizes, queue waits and cache counters recorded;
overload refused at once; batches validated once and run as one call."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest

from ml.config import Settings
from ml.contract import BatchLimits, ModelBase, call
from ml.engine import Engine
from ml.errors import DeadlineExceeded, InvalidInput, Overloaded, UnknownModel
from ml.image import ImageQuery
from ml.recommender import RecommendContext, RecommendQuery
from ml.registry import Entry, Registry
from ml.sentiment import SentimentOptions, SentimentQuery
from tests.conftest import encoded, photo, same

TEXTS = ["I love this so much", "worst service ever, never again", "the bus leaves at nine",
         "great game last night!!", "meh", "so angry about the delay"]


@pytest.fixture
def make_engine(registry: Registry) -> Iterator[Any]:
    made: list[Engine] = []

    def build(reg: Registry | None = None, tuned: dict[str, dict[str, float]] | None = None,
              **changes: Any) -> Engine:
        reg = reg or registry
        settings = reg.settings.replace(**changes)
        for model, limits in (tuned or {}).items():
            settings = settings.tuned(model, **limits)
        engine = Engine(reg, settings=settings)
        made.append(engine)
        return engine

    yield build
    for engine in made:
        engine.close()


@pytest.mark.parametrize("batching", [True, False])
@pytest.mark.parametrize("cache_entries", [0, 64])
def test_results_equal_the_models_own(make_engine, registry: Registry, batching: bool,  # type: ignore[no-untyped-def]
                                      cache_entries: int) -> None:
    engine = make_engine(batching=batching, cache_entries=cache_entries)
    for _ in range(2):  # the second round is served from the cache when it is on
        for name in registry.names():
            model = registry.get(name)
            for query in model.examples():
                assert engine.predict(name, query).result == call(model, query), name
        for text in TEXTS:
            for detailed in (False, True):
                query = SentimentQuery(text, SentimentOptions(detailed))
                assert engine.predict("sentiment", query).result == \
                    call(registry.get("sentiment"), query)


def test_the_async_path_answers_as_the_sync_one(make_engine, registry: Registry) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(cache_entries=0)

    async def both() -> list[Any]:
        return await asyncio.gather(*(engine.apredict(name, query)
                                      for name in registry.names()
                                      for query in registry.get(name).examples()))
    served = asyncio.run(both())
    expected = [call(registry.get(name), query) for name in registry.names()
                for query in registry.get(name).examples()]
    assert all(same(s.result, want) for s, want in zip(served, expected, strict=True))


def test_aliases_are_served_as_their_model(make_engine, registry: Registry) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    query = RecommendQuery("1", limit=3)
    assert engine.predict("recommend", query).result == engine.predict("recommender",
                                                                      query).result


def test_concurrent_callers_share_batches_and_get_their_own_answers(make_engine,  # type: ignore[no-untyped-def]
                                                                   registry: Registry) -> None:
    engine = make_engine(cache_entries=0, tuned={"sentiment": {"max_batch": 32}})
    model = registry.get("sentiment")
    texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(600)]
    queries = [SentimentQuery(t, SentimentOptions(detailed=True)) for t in texts]
    with ThreadPoolExecutor(32) as pool:
        served = list(pool.map(lambda q: engine.predict("sentiment", q), queries))
    for got, query in zip(served, queries, strict=True):
        want = call(model, query)
        # A batch sums in another order than a lone text: equal up to the last bits.
        assert got.result.sentiment == want.sentiment
        assert msgspec.structs.astuple(got.result.probabilities) == pytest.approx(
            msgspec.structs.astuple(want.probabilities), abs=1e-12)
    assert max(s.batch_size for s in served) > 1
    snapshot = engine.metrics.snapshot()["sentiment"]
    assert snapshot["items"] == 600 and snapshot["batch_size"]["max"] > 1
    assert snapshot["calls"] < 600  # requests shared calls
    prometheus = engine.metrics.prometheus().decode()
    for name in ("model_queue_wait_seconds_bucket", "model_batch_size_bucket",
                 "model_inference_seconds_bucket", "model_queue_depth"):
        assert f'{name}{{model="sentiment"' in prometheus or f'{name}{{le=' in prometheus


def test_cache_hits_are_counted_and_least_recently_used_go_first(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(cache_entries=2)
    first = engine.predict("sentiment", SentimentQuery("good morning"))
    again = engine.predict("sentiment", SentimentQuery("good morning"))
    assert not first.cached and again.cached and again.result == first.result
    engine.predict("sentiment", SentimentQuery("b"))
    engine.predict("sentiment", SentimentQuery("c"))  # evicts "good morning"
    assert not engine.predict("sentiment", SentimentQuery("good morning")).cached
    detailed = SentimentQuery("good morning", SentimentOptions(detailed=True))
    assert engine.predict("sentiment", detailed).cached is False
    stats = engine.stats()["sentiment"]["cache"]
    assert stats == {"entries": 2, "capacity": 2, "hits": 1, "misses": 5, "hit_rate": 0.1667}
    assert engine.metrics.snapshot()["sentiment"]["cache"] == {"hits": 1, "misses": 5}
    assert 'prediction_cache_total{model="sentiment",result="hit"} 1.0' in \
        engine.metrics.prometheus().decode()


def test_image_cache_is_keyed_by_content_and_top_k(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(cache_entries=8)
    jpeg = encoded(photo("coffee"), "JPEG")
    assert not engine.predict("image", ImageQuery(jpeg, top_k=5)).cached
    assert engine.predict("image", ImageQuery(bytes(bytearray(jpeg)), top_k=5)).cached
    assert not engine.predict("image", ImageQuery(jpeg, top_k=3)).cached
    assert not engine.predict("image", ImageQuery(encoded(photo("coffee"), "PNG"))).cached


def test_bad_input_is_refused_before_it_queues(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    with pytest.raises(InvalidInput):
        engine.predict("sentiment", SentimentQuery("   "))
    with pytest.raises(InvalidInput):
        engine.predict("image", ImageQuery(b"not an image"))
    with pytest.raises(InvalidInput):
        engine.predict("image", ImageQuery(encoded(photo("coffee"), "PNG"), top_k=0))
    with pytest.raises(InvalidInput):
        engine.predict("recommender", RecommendQuery("1", RecommendContext("SPACESHIPS")))
    with pytest.raises(UnknownModel):
        engine.predict("nope", SentimentQuery("hi"))
    assert engine.stats()["sentiment"]["cache"]["entries"] == 0  # errors are never cached


def test_a_batch_is_validated_once_and_run_as_one_call(make_engine, registry: Registry) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(cache_entries=16)
    queries = [SentimentQuery(t) for t in TEXTS * 50]
    engine.predict("sentiment", queries[0])  # one of them is in the cache already
    calls_before = engine.metrics.snapshot()["sentiment"]["calls"]
    served = engine.predict_many("sentiment", queries)
    assert all(same(s.result, call(registry.get("sentiment"), q))
               for s, q in zip(served, queries, strict=True))
    assert served[0].cached and not served[1].cached
    assert engine.metrics.snapshot()["sentiment"]["calls"] == calls_before + 1
    with pytest.raises(InvalidInput) as caught:
        engine.predict_many("sentiment", [SentimentQuery("fine"), SentimentQuery("\u200b")])
    assert caught.value.details["index"] == 1 and caught.value.field == "text"
    with pytest.raises(InvalidInput):
        make_engine(max_batch_texts=3).predict_many("sentiment", queries[:4])


class Gated(ModelBase[SentimentQuery, int, Any]):
    """A model whose predictions wait for a gate."""

    name = "slow"
    version = "slow-v1"
    Query = SentimentQuery
    Result = msgspec.Struct
    batch_limits = BatchLimits(max_batch=16, max_queue=256)

    def __init__(self) -> None:
        self.gate = threading.Event()

    def prepare(self, query: SentimentQuery) -> int:
        return int(query.text)

    def predict(self, items: Sequence[int]) -> list[Any]:
        self.gate.wait(10)
        return list(items)

    def examples(self) -> list[SentimentQuery]:
        return [SentimentQuery("1")]

    def info(self) -> dict[str, Any]:
        return {}

    def warmup(self) -> None:
        pass


def slow_registry(settings: Settings) -> tuple[Registry, Gated]:
    model = Gated()
    return Registry(settings, entries={"slow": Entry.of(model)}), model


@pytest.mark.parametrize("batching", [True, False])
def test_a_full_queue_is_refused_at_once(make_engine, settings: Settings,  # type: ignore[no-untyped-def]
                                         batching: bool) -> None:
    registry, model = slow_registry(settings)
    engine = make_engine(registry, batching=batching, threadpool_size=1, cache_entries=0)
    limit = 256  # the model's own queue bound
    accepted = []
    pool = ThreadPoolExecutor(1)

    def submit(i: int) -> Any:
        return engine._submit("slow", model, i, None, 30.0)

    with pytest.raises(Overloaded):
        for i in range(1000):
            accepted.append(submit(i))
    # the queue, plus what the worker already took (one batch of at most 16, or one item)
    assert limit <= len(accepted) <= limit + 16
    started = time.perf_counter()
    with pytest.raises(Overloaded):
        engine.predict("slow", SentimentQuery("-1"))
    assert time.perf_counter() - started < 1.0  # refused, not queued behind the others
    model.gate.set()
    assert [f.result(10) for f in accepted] == list(range(len(accepted)))
    pool.shutdown()


def test_settings_override_the_model_s_own_limits(make_engine, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    registry, _ = slow_registry(settings)
    engine = make_engine(registry, tuned={"slow": {"max_queue": 3, "max_wait_ms": 2}})
    assert engine.batch_limits("slow") == BatchLimits(max_batch=16, max_wait_ms=2.0,
                                                      max_queue=3)
    from_env = Settings.from_env({"ML_SLOW_MAX_BATCH": "4", "ML_SLOW_MAX_QUEUE": "9"})
    assert from_env.batch_overrides_for("slow") == {"max_batch": 4.0, "max_queue": 9.0}


def test_a_deadline_is_kept_on_both_paths(make_engine, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    registry, model = slow_registry(settings)
    engine = make_engine(registry, cache_entries=0)
    started = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        engine.predict("slow", SentimentQuery("1"), timeout_s=0.2)
    with pytest.raises(DeadlineExceeded):
        asyncio.run(engine.apredict("slow", SentimentQuery("2"), timeout_s=0.2))
    with pytest.raises(DeadlineExceeded):  # a batch too, on the sync path as on the async one
        engine.predict_many("slow", [SentimentQuery("4")], timeout_s=0.2)
    with pytest.raises(DeadlineExceeded):
        asyncio.run(engine.apredict_many("slow", [SentimentQuery("5")], timeout_s=0.2))
    assert time.perf_counter() - started < 5
    model.gate.set()
    assert engine.predict("slow", SentimentQuery("3")).result == 3


# -- the in-process API: ml.predict, ml.predict_many ----------------------------------------

def test_ml_predict_builds_and_checks_the_query_from_plain_fields(registry: Registry) -> None:
    import ml

    picks = ml.predict("recommender", user_id="1", limit=3, context={"category": "produce"})
    assert len(picks.recommendations) == 3
    assert {item.department for item in picks.recommendations} == {"PRODUCE"}
    assert ml.predict("recommend", user_id="1", limit=2).recommendations  # the alias too
    with pytest.raises(InvalidInput) as caught:
        ml.predict("recommender", user_id="1", limit=0)  # the query declares ge=1
    assert caught.value.field == "limit"
    with pytest.raises(InvalidInput) as caught:
        ml.predict("sentiment", text="hi", detailed=True)  # detailed sits in options
    assert "detailed" in caught.value.message


def test_ml_predict_many_chunks_at_the_engine_s_bound_and_names_rows(registry: Registry
                                                                     ) -> None:
    import ml
    from ml.engine import default_engine

    limit = default_engine().settings.max_batch_texts
    rows = [{"text": "great"}, {"text": "awful"}] * (limit // 2 + 1)  # more than one call
    results = ml.predict_many("sentiment", rows)
    assert [r.sentiment for r in results[:2]] == ["positive", "negative"]
    assert len(results) == len(rows)
    with pytest.raises(InvalidInput) as caught:
        ml.predict_many("sentiment", [*rows, {"text": "   "}])  # in the second chunk
    assert caught.value.details["index"] == len(rows) and caught.value.field == "text"
    assert str(len(rows)) in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        ml.predict_many("sentiment", [{"text": "fine"}, {"text": 5}])
    assert caught.value.details["index"] == 1
    assert ml.predict_many("sentiment", []) == []
