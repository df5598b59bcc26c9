"""Cheap models on the event loop: the same answers as the model alone, batched per loop
iteration, and never a slow call on the loop beyond the budget's first miss."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from ml.engine import Engine
from ml.inline import MIN_CALLS, Cost, LoopBatcher
from ml.registry import Entry, Registry
from ml.sentiment import SentimentQuery, SentimentResult
from tests.conftest import SentimentStub, same


def test_a_loop_batch_answers_as_the_model_alone(sentiment) -> None:  # type: ignore[no-untyped-def]
    texts = [f"tweet number {i}: {'loved it' if i % 3 else 'awful service'}" for i in range(40)]
    items = [sentiment.prepare(SentimentQuery(t)) for t in texts]
    sizes: list[int] = []

    async def main() -> list[Any]:
        cost = Cost(0.05)
        for _ in range(MIN_CALLS):
            cost.add(40e-6, 1)
        batcher = LoopBatcher(sentiment.predict, name="sentiment", cost=cost, budget_s=0.05,
                              max_batch_size=64, max_queue=100,
                              observer=lambda name, waits, compute, size: sizes.append(size))
        futures = [batcher.submit(item) for item in items]  # all in this one iteration
        return [outcome[0] for outcome in await asyncio.gather(*futures)]

    results = asyncio.run(main())
    alone = [sentiment.predict([item])[0] for item in items]
    assert all(same(a, b) for a, b in zip(results, alone, strict=True))
    assert sizes == [40]  # one call for the whole iteration


def test_a_loop_batch_is_sliced_to_fit_the_budget() -> None:
    sizes: list[int] = []

    async def main() -> list[int]:
        cost = Cost(5e-3)
        for _ in range(MIN_CALLS):
            cost.add(1e-3, 1)  # 1 ms an item: a 5 ms budget takes 5 items a call
        def double(items: list[int]) -> list[int]:
            time.sleep(1e-3 * len(items))  # keeps the measured cost at 1 ms an item
            return [2 * i for i in items]

        batcher = LoopBatcher(double, name="double", cost=cost,
                              budget_s=5e-3, max_batch_size=64, max_queue=100,
                              observer=lambda name, waits, compute, size: sizes.append(size))
        outcomes = await asyncio.gather(*[batcher.submit(i) for i in range(12)])
        return [outcome[0] for outcome in outcomes]

    assert asyncio.run(main()) == [2 * i for i in range(12)]
    assert sizes[0] == 5 and max(sizes) <= 5 and sum(sizes) == 12


def test_one_bad_item_fails_alone_on_the_loop() -> None:
    def predict(items: list[int]) -> list[int]:
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return items

    async def main() -> list[Any]:
        cost = Cost(1.0)
        batcher = LoopBatcher(predict, name="n", cost=cost, budget_s=1.0, max_batch_size=8,
                              max_queue=8)
        return await asyncio.gather(*[batcher.submit(i) for i in (1, -2, 3)],
                                    return_exceptions=True)

    first, second, third = asyncio.run(main())
    assert first[0] == 1 and third[0] == 3 and isinstance(second, ValueError)


def test_cost_believes_a_call_past_the_budget_at_once_and_others_gradually() -> None:
    cost = Cost(1e-3)
    for _ in range(MIN_CALLS):
        cost.add(40e-6, 1)
    assert cost.inline(1e-3) and cost.fits(1e-3) == 25
    cost.add(1.2e-3, 1)  # one call that held the loop past the 1 ms budget: off at once
    assert not cost.inline(1e-3)
    calls = 0
    while not cost.inline(1e-3):
        cost.add(40e-6, 1)
        calls += 1
    assert 5 <= calls <= 20  # and back once cheap calls outweigh it
    for _ in range(30):
        cost.add(40e-6, 1)
    # a slower call within the budget (a text of new words, a collector pause) moves the
    # average by WEIGHT: one leaves the model on the loop, a run of them takes it off
    cost.add(6e-4, 1)
    assert cost.inline(1e-3)
    slow = 1
    while cost.inline(1e-3):
        cost.add(6e-4, 1)
        slow += 1
    assert slow == 3
    # a big batch past the budget that is cheap per item lowers the average gradually
    before = cost.per_item
    cost.add(64 * 40e-6, 64)
    assert 40e-6 < cost.per_item < before


class Switchable(SentimentStub):
    """A model whose calls take `delay` seconds; records where each call ran and how long."""

    name = "switchable"
    version = "switchable-v1"

    def __init__(self) -> None:
        self.delay = 0.0
        self.calls: list[tuple[str, float, int]] = []  # thread name, seconds, items

    def prepare(self, query: SentimentQuery) -> str:
        return query.text

    def predict(self, items: Any) -> list[SentimentResult]:
        started = time.perf_counter()
        if self.delay:
            time.sleep(self.delay)
        self.calls.append((threading.current_thread().name, time.perf_counter() - started,
                           len(items)))
        return [SentimentResult("neutral", 1.0, 0.0) for _ in items]


@pytest.fixture
def switchable(settings):  # type: ignore[no-untyped-def]
    model = Switchable()
    registry = Registry(settings.replace(models=("switchable",), cache_entries=0,
                                         inline_budget_ms=2.0),
                        entries={"switchable": Entry.of(model)})
    engine = Engine(registry)
    yield model, engine
    engine.close()


async def waves(engine: Engine, count: int, size: int) -> None:
    """`count` waves of `size` concurrent predictions."""
    for _ in range(count):
        await asyncio.gather(*[engine.apredict("switchable", SentimentQuery(f"t{i}"))
                               for i in range(size)])


def on_loop(calls: list[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
    return [c for c in calls if c[0] == "MainThread"]


def test_a_model_slower_than_the_budget_never_runs_on_the_loop(switchable) -> None:  # type: ignore[no-untyped-def]
    model, engine = switchable
    model.delay = 0.005  # 5 ms a call, over the 2 ms budget from the first call on
    asyncio.run(waves(engine, MIN_CALLS + 10, 4))
    assert len(model.calls) >= MIN_CALLS + 10
    assert on_loop(model.calls) == []


def test_a_cheap_model_moves_onto_the_loop_and_off_again_after_one_slow_call(switchable) -> None:  # type: ignore[no-untyped-def]
    model, engine = switchable
    asyncio.run(waves(engine, MIN_CALLS + 10, 8))
    cheap = on_loop(model.calls)
    assert cheap, "a cheap model never ran on the loop"
    assert max(size for _, _, size in cheap) > 1  # requests of one iteration, one call
    model.calls.clear()
    model.delay = 0.006  # now three times the budget (0.75 ms an item in a call of 8)
    asyncio.run(waves(engine, 10, 8))
    slow_on_loop = [c for c in on_loop(model.calls) if c[1] > 0.002]
    assert len(slow_on_loop) == 1, model.calls  # the call that showed it; none after
    assert len(model.calls) > 1 and model.calls[-1][0] != "MainThread"
