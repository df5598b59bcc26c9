"""Cheap models served on the event loop itself, with natural batching.

A sentiment prediction costs ~40 us; handing it to a batcher thread and back (a queue, a
condition variable, a future and a wake-up of the loop) costs more than the model, and on a
one-core server the two threads only take turns anyway. So for a model whose measured cost
is small, the async path skips the thread: the items submitted during one loop iteration
are run together, inline, as one `predict` call in the next iteration.

The loop must stay responsive, so the time one call may take is budgeted
(ML_INLINE_BUDGET_MS):

- `Cost` follows each model's compute per item, from every call on any path. A model runs
  inline only after `MIN_CALLS` calls were measured and while `MAX_SHARE` of the budget
  fits several items. A call that held its thread past the budget, slower per item than
  the average, is believed at once: the model goes back to its thread batcher after that
  one call until it is cheap again. A slower call within the budget (a text of words never
  seen before, a collector pause) moves the average like any other, so that one such call
  does not send a cheap model through a thread hand-off that costs more than it does; a
  run of them does.
- One inline call takes at most as many items as fit in the budget at the measured cost;
  the rest go in the next iteration, after the other tasks that are ready have run.

Heavy models (image decoding and a CNN: milliseconds) never qualify and keep their threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from ml.batching import Failed, Observer, vectorised
from ml.errors import DeadlineExceeded, Overloaded

T = TypeVar("T")
R = TypeVar("R")
MIN_CALLS = 16  # measured calls before a model may run inline
MAX_SHARE = 0.25  # a model runs inline while one item costs at most this share of the budget
# Per-item cost average: new calls weigh this much. A slower call past the budget moves it
# at once, so a model that turns slow leaves the loop after one call over the budget.
WEIGHT = 0.2
# (result, queue wait s, compute s of the call, items in the call)
Outcome = tuple[Any, float, float, int]


class Cost:
    """A model's measured compute per item (seconds): a moving average over its calls."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s  # what one call may take on the loop (ML_INLINE_BUDGET_MS)
        self.calls = 0
        self.per_item = 0.0

    def add(self, seconds: float, items: int) -> None:
        """Record one call of `items` items that took `seconds`."""
        one = seconds / max(1, items)
        if self.calls == 0 or (one > self.per_item and seconds > self.budget_s):
            self.per_item = one  # the first call, or slower past the budget: believe it
        else:
            self.per_item += WEIGHT * (one - self.per_item)
        self.calls += 1

    def inline(self, budget_s: float) -> bool:
        """Whether the model is cheap enough, on enough evidence, to run on the loop."""
        return self.calls >= MIN_CALLS and self.per_item <= MAX_SHARE * budget_s

    def fits(self, budget_s: float) -> int:
        """How many items one inline call may take within the budget."""
        return max(1, int(budget_s / self.per_item)) if self.per_item else 1


class LoopBatcher(Generic[T, R]):
    """Runs `predict(items)` on the event loop for the items submitted in one iteration."""

    def __init__(self, predict: Callable[[list[T]], Sequence[R]], *, name: str,
                 cost: Cost, budget_s: float, max_batch_size: int, max_queue: int,
                 observer: Observer | None = None) -> None:
        self.predict = predict
        self.name = name
        self.cost = cost
        self.budget_s = budget_s
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.observer = observer
        self.loop = asyncio.get_running_loop()
        self._pending: list[tuple[T, asyncio.Future[Outcome], float, float | None]] = []
        self._scheduled = False

    @property
    def queued(self) -> int:
        """Items waiting for the next iteration."""
        return len(self._pending)

    def submit(self, item: T, *, timeout_s: float | None = None) -> asyncio.Future[Outcome]:
        """Queue `item` for the next iteration; Overloaded at once when the queue is full."""
        if len(self._pending) >= self.max_queue:
            raise Overloaded(self.name, retry_after_s=1.0)
        future: asyncio.Future[Outcome] = self.loop.create_future()
        now = time.perf_counter()
        self._pending.append((item, future, now, None if timeout_s is None else now + timeout_s))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._run)
        return future

    def _run(self) -> None:
        self._scheduled = False
        size = min(self.max_batch_size, self.cost.fits(self.budget_s))
        batch, self._pending = self._pending[:size], self._pending[size:]
        if self._pending:  # the rest after whatever else is ready now
            self._scheduled = True
            self.loop.call_soon(self._run)
        now = time.perf_counter()
        live = []
        for job in batch:
            _, future, enqueued, deadline = job
            if future.done():  # its caller gave up (timed out, disconnected)
                continue
            if deadline is not None and now > deadline:
                future.set_exception(DeadlineExceeded(self.name, now - enqueued))
            else:
                live.append(job)
        if not live:
            return
        waits = [now - enqueued for _, _, enqueued, _ in live]
        outcomes, compute = vectorised(self.name, self.predict, [item for item, _, _, _ in live])
        self.cost.add(compute, len(live))
        if self.observer is not None:  # before the answers, as in ml.batching
            self.observer(self.name, waits, compute, len(live))
        for (_, future, _, _), wait, (result, seconds, size) in zip(live, waits, outcomes,
                                                                     strict=True):
            if isinstance(result, Failed):
                future.set_exception(result.error)
            else:
                future.set_result((result, wait, seconds, size))
