"""The serving engine: same answers as the models themselves, with batching and caching on
or off; batch sizes, queue waits and cache counters recorded; overload refused at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ml.config import Settings
from ml.engine import Engine, ImageQuery, TextQuery
from ml.errors import InvalidInput, Overloaded, UnknownModel
from ml.recommender import RecommendRequest
from ml.registry import Registry
from tests.conftest import encoded, photo

TEXTS = ["I love this so much", "worst service ever, never again", "the bus leaves at nine",
         "great game last night!!", "meh", "so angry about the delay"]


@pytest.fixture
def make_engine(registry: Registry) -> Iterator[Any]:
    made: list[Engine] = []

    def build(reg: Registry | None = None, **changes: Any) -> Engine:
        reg = reg or registry
        engine = Engine(reg, settings=reg.settings.replace(**changes))
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
    sentiment, image, recommender = (registry.get(n) for n in
                                     ("sentiment", "image", "recommender"))
    for _ in range(2):  # the second round is served from the cache when it is on
        for text in TEXTS:
            for detailed in (False, True):
                got = engine.predict("sentiment", TextQuery(text, detailed)).result
                assert got == sentiment.predict_one(text, detailed=detailed)  # type: ignore[attr-defined]
        jpeg = encoded(photo("chelsea"), "JPEG")
        assert engine.predict("image", ImageQuery(jpeg, 3)).result == \
            image.predict_one(jpeg, top_k=3)  # type: ignore[attr-defined]
        user = recommender.known_users()[0]  # type: ignore[attr-defined]
        query = RecommendRequest(user, limit=5, category=None)
        assert engine.predict("recommender", query).result == recommender.recommend(user, limit=5)  # type: ignore[attr-defined]


def test_concurrent_callers_share_batches_and_get_their_own_answers(make_engine,  # type: ignore[no-untyped-def]
                                                                   registry: Registry) -> None:
    engine = make_engine(cache_entries=0, sentiment_max_batch=32)
    model = registry.get("sentiment")
    texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(600)]
    with ThreadPoolExecutor(32) as pool:
        served = list(pool.map(lambda t: engine.predict("sentiment", TextQuery(t)), texts))
    expected = [model.predict_one(t) for t in texts]  # type: ignore[attr-defined]
    for got, want in zip(served, expected, strict=True):
        # A batch sums in another order than a lone text: equal up to the last bits.
        assert got.result.sentiment == want.sentiment
        assert got.result.probabilities == pytest.approx(want.probabilities, abs=1e-12)
    assert max(s.batch_size for s in served) > 1
    snapshot = engine.metrics.snapshot()["models"]["sentiment"]
    assert snapshot["items"] == 600 and snapshot["batch_size"]["max"] > 1
    assert snapshot["queue_wait"]["p50_ms"] >= 0
    prometheus = engine.metrics.prometheus().decode()
    for name in ("model_queue_wait_seconds_bucket", "model_batch_size_bucket",
                 "model_inference_seconds_bucket", "model_queue_depth"):
        assert f'{name}{{model="sentiment"' in prometheus or f'{name}{{le=' in prometheus


def test_cache_hits_are_counted_and_least_recently_used_go_first(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(cache_entries=2)
    first = engine.predict("sentiment", TextQuery("good morning"))
    again = engine.predict("sentiment", TextQuery("good morning"))
    assert not first.cached and again.cached and again.result == first.result
    engine.predict("sentiment", TextQuery("b"))
    engine.predict("sentiment", TextQuery("c"))  # evicts "good morning"
    assert not engine.predict("sentiment", TextQuery("good morning")).cached
    assert engine.predict("sentiment", TextQuery("good morning", detailed=True)).cached is False
    stats = engine.stats()["sentiment"]["cache"]
    assert stats == {"entries": 2, "capacity": 2, "hits": 1, "misses": 5, "hit_rate": 0.1667}
    metrics = engine.metrics.snapshot()["models"]["sentiment"]["cache"]
    assert metrics == {"hits": 1, "misses": 5}
    assert 'prediction_cache_total{model="sentiment",result="hit"} 1.0' in \
        engine.metrics.prometheus().decode()


def test_image_cache_is_keyed_by_content_and_top_k(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(cache_entries=8)
    jpeg = encoded(photo("coffee"), "JPEG")
    assert not engine.predict("image", ImageQuery(jpeg, 5)).cached
    assert engine.predict("image", ImageQuery(bytes(jpeg), 5)).cached  # same bytes, new object
    assert not engine.predict("image", ImageQuery(jpeg, 3)).cached
    assert not engine.predict("image", ImageQuery(encoded(photo("coffee"), "PNG"), 5)).cached


def test_bad_input_is_refused_before_it_queues(make_engine) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine()
    with pytest.raises(InvalidInput):
        engine.predict("sentiment", TextQuery("   "))
    with pytest.raises(InvalidInput):
        engine.predict("image", ImageQuery(b"not an image"))
    with pytest.raises(InvalidInput):
        engine.predict("image", ImageQuery(encoded(photo("coffee"), "PNG"), 0))
    with pytest.raises(UnknownModel):
        engine.predict("nope", TextQuery("hi"))
    assert engine.stats()["sentiment"]["cache"]["entries"] == 0  # errors are never cached


class Gated:
    """A model whose predictions wait for a gate."""

    name = "slow"
    version = "slow-v1"

    def __init__(self) -> None:
        self.gate = threading.Event()

    def predict(self, batch: list[Any]) -> list[Any]:
        self.gate.wait(10)
        return list(batch)

    def info(self) -> dict[str, Any]:
        return {}

    def warmup(self) -> None:
        pass


@pytest.mark.parametrize("batching", [True, False])
def test_a_full_queue_is_refused_at_once(make_engine, settings: Settings,  # type: ignore[no-untyped-def]
                                         batching: bool) -> None:
    model = Gated()
    registry = Registry(settings, builders={"slow": lambda s, st: model})
    engine = make_engine(registry, batching=batching, threadpool_size=1)
    runner = engine.runner("slow")
    limit = 256  # the default queue for models without their own settings
    accepted = []
    with pytest.raises(Overloaded):
        for i in range(1000):
            accepted.append(engine.submit("slow", i))
    # the queue, plus what the worker already took (one batch of at most 16, or one item)
    assert limit <= len(accepted) <= limit + 16
    started = time.perf_counter()
    with pytest.raises(Overloaded):
        engine.submit("slow", -1)
    assert time.perf_counter() - started < 1.0  # refused, not queued behind the others
    assert runner.queued >= limit
    model.gate.set()
    assert [f.result(10) for f in accepted] == list(range(len(accepted)))
