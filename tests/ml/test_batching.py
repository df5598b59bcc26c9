"""The micro-batcher with small real predict functions."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ml.batching import Batcher, Direct, Timed
from ml.errors import DeadlineExceeded, InvalidInput, Overloaded


class Recorder:
    """predict(batch) that doubles numbers, records batch sizes, can be slowed or gated."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.batches: list[list[int]] = []
        self.started: list[float] = []  # perf_counter when each call began
        self.entered = threading.Event()  # a call has begun
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.started.append(time.perf_counter())
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        with self.lock:
            self.batches.append(list(items))
        if any(i < 0 for i in items):
            raise InvalidInput("negative numbers are not allowed", field="x")
        time.sleep(self.delay)
        return [2 * i for i in items]


@pytest.fixture
def make():  # type: ignore[no-untyped-def]
    made: list[Batcher[int, int]] = []

    def build(predict: Recorder, **kwargs: object) -> Batcher[int, int]:
        batcher: Batcher[int, int] = Batcher(predict, name="numbers", **kwargs)  # type: ignore[arg-type]
        made.append(batcher)
        return batcher

    yield build
    for batcher in made:
        batcher.close()


def test_single_item_dispatches_at_once_when_idle(make) -> None:  # type: ignore[no-untyped-def]
    predict = Recorder()
    batcher = make(predict, max_wait_ms=500)
    started = time.perf_counter()
    assert batcher(21) == 42
    assert time.perf_counter() - started < 0.2  # did not wait out max_wait
    assert predict.batches == [[21]]


def test_concurrent_items_are_batched_in_order(make) -> None:  # type: ignore[no-untyped-def]
    gate = threading.Event()
    predict = Recorder(gate=gate)
    batcher = make(predict, max_batch_size=8, max_wait_ms=50)
    first = batcher.submit(0)  # occupies the worker while the others queue
    assert predict.entered.wait(5)
    futures = [batcher.submit(i) for i in range(1, 9)]
    gate.set()
    assert first.result(5) == 0
    assert [f.result(5) for f in futures] == [2 * i for i in range(1, 9)]
    assert predict.batches[1] == list(range(1, 9))


def test_batches_never_exceed_the_maximum(make) -> None:  # type: ignore[no-untyped-def]
    gate = threading.Event()
    predict = Recorder(gate=gate)
    batcher = make(predict, max_batch_size=4, max_wait_ms=1)
    futures = [batcher.submit(i) for i in range(20)]
    gate.set()
    assert [f.result(5) for f in futures] == [2 * i for i in range(20)]
    assert max(len(b) for b in predict.batches) <= 4


WAIT_MS = 150  # long enough to tell from no wait on a busy 2-core machine
WAIT_SLACK_S = 1.0  # scheduling noise allowed on top of the wait; 25 waits are 3.75 s


def assert_max_wait_is_honoured_under_load(batcher: Batcher[int, int], predict: Recorder) -> None:
    """Under load a batch waits for stragglers: at least max_wait, and not much longer."""
    assert predict.gate is not None
    busy = batcher.submit(1)  # held at the gate while 2 and 3 queue behind it
    assert predict.entered.wait(5)
    a, b = batcher.submit(2), batcher.submit(3)
    released = time.perf_counter()
    predict.gate.set()
    busy.result(5)
    time.sleep(WAIT_MS / 1e3 / 5)  # a straggler, well inside the wait
    c = batcher.submit(4)
    assert [a.result(10), b.result(10), c.result(10)] == [4, 6, 8]
    assert predict.batches == [[1], [2, 3, 4]], "the straggler missed the batch"
    waited = predict.started[1] - released
    assert waited >= WAIT_MS / 1e3, f"dispatched after {waited:.3f}s, before max_wait"
    assert waited < WAIT_MS / 1e3 + WAIT_SLACK_S, f"dispatched after {waited:.3f}s"


def test_max_wait_is_honoured_under_load(make) -> None:  # type: ignore[no-untyped-def]
    predict = Recorder(gate=threading.Event())
    assert_max_wait_is_honoured_under_load(
        make(predict, max_batch_size=64, max_wait_ms=WAIT_MS), predict)


@pytest.mark.parametrize(("factor", "caught_by"), [
    pytest.param(0.0, "missed the batch", id="no-wait"),
    pytest.param(25.0, "dispatched after", id="wait-25x-too-long")])
def test_the_max_wait_check_fails_when_the_wait_is_wrong(make, factor: float,  # type: ignore[no-untyped-def]
                                                         caught_by: str) -> None:
    """Mutation: a batcher that waits not at all, or 25 times too long, fails the check."""
    predict = Recorder(gate=threading.Event())
    batcher = make(predict, max_batch_size=64, max_wait_ms=WAIT_MS)
    batcher.max_wait *= factor
    with pytest.raises(AssertionError, match=caught_by):
        assert_max_wait_is_honoured_under_load(batcher, predict)


def test_one_bad_item_fails_alone(make) -> None:  # type: ignore[no-untyped-def]
    gate = threading.Event()
    predict = Recorder(gate=gate)
    batcher = make(predict, max_batch_size=8)
    futures = [batcher.submit(i) for i in (1, 2, -3, 4)]
    gate.set()
    assert futures[0].result(5) == 2 and futures[1].result(5) == 4
    with pytest.raises(InvalidInput):
        futures[2].result(5)
    assert futures[3].result(5) == 8


def test_full_queue_refuses_at_once(make) -> None:  # type: ignore[no-untyped-def]
    gate = threading.Event()
    predict = Recorder(gate=gate)
    batcher = make(predict, max_queue=3, max_batch_size=1)
    batcher.submit(0)
    assert predict.entered.wait(5)  # the worker holds item 0 at the gate; the queue is empty
    accepted = [batcher.submit(i) for i in range(1, 4)]
    with pytest.raises(Overloaded) as caught:
        batcher.submit(99)
    assert not predict.batches  # refused while the worker was still held: no wait for room
    assert caught.value.retry_after_s > 0
    gate.set()
    assert [f.result(5) for f in accepted] == [2, 4, 6]


def test_expired_items_are_dropped_before_compute(make) -> None:  # type: ignore[no-untyped-def]
    gate = threading.Event()
    predict = Recorder(gate=gate)
    batcher = make(predict)
    batcher.submit(1)
    assert predict.entered.wait(5)
    late = batcher.submit(2, timeout_s=0.01)
    fine = batcher.submit(3, timeout_s=10)
    time.sleep(0.05)
    gate.set()
    with pytest.raises(DeadlineExceeded):
        late.result(5)
    assert fine.result(5) == 6
    assert all(2 not in batch for batch in predict.batches)


def test_cancelled_and_expired_item_leaves_the_worker_alive(make) -> None:  # type: ignore[no-untyped-def]
    """A caller that gave up cancels its future; if the item also expired, the worker
    once set an exception on the cancelled future, raised InvalidStateError and died,
    so every later item waited forever."""
    gate = threading.Event()
    predict = Recorder(gate=gate)
    batcher = make(predict)
    batcher.submit(1)
    assert predict.entered.wait(5)
    abandoned = batcher.submit(2, timeout_s=0.01)
    assert abandoned.cancel()
    time.sleep(0.05)  # expired too, while the worker is held at the gate
    gate.set()
    assert batcher.submit(3).result(5) == 6
    assert all(2 not in batch for batch in predict.batches)


def test_no_lost_or_duplicated_results_under_many_callers(make) -> None:  # type: ignore[no-untyped-def]
    predict = Recorder(delay=0.001)
    batcher = make(predict, max_batch_size=16, max_wait_ms=1, max_queue=10_000)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(batcher, range(2000)))
    assert results == [2 * i for i in range(2000)]
    computed = sorted(i for batch in predict.batches for i in batch)
    assert computed == list(range(2000))
    assert max(len(b) for b in predict.batches) > 1  # batching happened


def test_observer_sees_wait_compute_and_size(make) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, list[float], float, int]] = []
    predict = Recorder(delay=0.01, gate=threading.Event())
    batcher = make(predict, observer=lambda name, waits, compute, size: seen.append(
        (name, list(waits), compute, size)))
    first = batcher.submit(5)
    assert predict.entered.wait(5)
    second = batcher.submit(6)  # queues behind the first while the gate holds it
    time.sleep(0.1)
    predict.gate.set()
    assert first.result(5) == 10 and second.result(5) == 12
    name, waits, compute, size = seen[0]
    assert name == "numbers" and size == 1 and compute >= 0.1 and len(waits) == 1
    assert first.batch_size == 1 and first.compute_s == compute
    assert first.queue_s == waits[0] < 0.1  # dispatched at once; the gate counts as compute
    assert second.queue_s == seen[1][1][0] >= 0.1  # waited out the first call


def test_a_call_is_recorded_before_its_answers_are_delivered(make) -> None:  # type: ignore[no-untyped-def]
    """Whoever has an answer finds its call in the metrics (else /metrics right after a
    response could still miss it)."""
    futures: list[Timed[int]] = []
    answered_when_recorded: list[bool] = []
    batcher = make(Recorder(), observer=lambda name, waits, compute, size: (
        answered_when_recorded.append(futures[0].done())))
    futures.append(batcher.submit(1))
    assert futures[0].result(5) == 2
    assert answered_when_recorded == [False]


def test_closed_batcher_refuses_new_work(make) -> None:  # type: ignore[no-untyped-def]
    batcher = make(Recorder())
    assert batcher(1) == 2
    batcher.close()
    with pytest.raises(Overloaded):
        batcher.submit(2)


# -- Direct: the batching-off runner ------------------------------------------------------------

def test_direct_runs_each_item_alone_with_the_same_guarantees() -> None:
    predict = Recorder(delay=0.001)
    direct: Direct[int, int] = Direct(predict, name="numbers", workers=4, max_queue=10_000)
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = list(pool.map(lambda i: direct.submit(i), range(500)))
        assert [f.result(5) for f in futures] == [2 * i for i in range(500)]
        assert all(len(batch) == 1 for batch in predict.batches)
        assert futures[0].batch_size == 1 and futures[0].compute_s > 0
        with pytest.raises(InvalidInput):
            direct.submit(-1).result(5)
        assert direct.submit(7).result(5) == 14  # an error did not break the worker
    finally:
        direct.close()


def test_direct_reuses_the_last_idle_thread() -> None:
    threads: list[str] = []

    def predict(items: list[int]) -> list[int]:
        threads.append(threading.current_thread().name)
        return items

    direct: Direct[int, int] = Direct(predict, name="t", workers=4)
    try:
        for i in range(20):
            direct.submit(i).result(5)
        assert len(set(threads)) == 1  # a lone caller stays on one warm thread
    finally:
        direct.close()


def test_direct_refuses_when_full_and_drops_expired_items() -> None:
    gate = threading.Event()
    predict = Recorder(gate=gate)
    direct: Direct[int, int] = Direct(predict, name="numbers", workers=1, max_queue=2)
    try:
        running = direct.submit(0)
        assert predict.entered.wait(5)
        late = direct.submit(1, timeout_s=0.01)
        fine = direct.submit(2)
        with pytest.raises(Overloaded):
            direct.submit(3)
        time.sleep(0.05)
        gate.set()
        assert running.result(5) == 0 and fine.result(5) == 4
        with pytest.raises(DeadlineExceeded):
            late.result(5)
        assert direct.queued == 0
    finally:
        direct.close()
    with pytest.raises(Overloaded):
        direct.submit(4)
