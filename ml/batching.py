"""Dynamic micro-batching: concurrent callers' items run as one vectorised model call.

A worker thread takes the first queued item and dispatches at once if nothing else is
waiting (an idle server never waits for a batch to fill); under load, items that queued up
while the previous batch computed go together, up to `max_batch_size`, waiting at most
`max_wait_ms` for stragglers. The queue is bounded: a full queue refuses new items at once
(Overloaded) instead of letting callers wait without limit, and an item whose deadline
passed while it queued is dropped before compute (DeadlineExceeded).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ml.errors import DeadlineExceeded, Overloaded

T = TypeVar("T")
R = TypeVar("R")
Observer = Callable[[str, float, float, int], None]  # (name, queue wait s, compute s, size)


@dataclass
class _Job(Generic[T, R]):
    item: T
    deadline: float | None
    enqueued: float = field(default_factory=time.perf_counter)
    future: Future[R] = field(default_factory=Future)


class Batcher(Generic[T, R]):
    """Runs `predict(list_of_items) -> list_of_results` on batches of concurrent submissions."""

    def __init__(self, predict: Callable[[list[T]], Sequence[R]], *, name: str,
                 max_batch_size: int = 16, max_wait_ms: float = 2.0, max_queue: int = 256,
                 observer: Observer | None = None) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_ms >= 0")
        self.predict = predict
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1e3
        self.observer = observer
        self._queue: queue.Queue[_Job[T, R] | None] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._worker = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._worker.start()

    def submit(self, item: T, *, timeout_s: float | None = None) -> Future[R]:
        """Queue `item`; its result (or error) arrives on the returned future.

        Raises Overloaded at once when the queue is full.
        """
        if self._closed:
            raise Overloaded(self.name, retry_after_s=1.0)
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        job: _Job[T, R] = _Job(item, deadline)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(self.name, retry_after_s=1.0) from None
        return job.future

    def __call__(self, item: T, *, timeout_s: float | None = None) -> R:
        """Submit and wait: the synchronous form."""
        return self.submit(item, timeout_s=timeout_s).result()

    @property
    def queued(self) -> int:
        """Items waiting now."""
        return self._queue.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the worker."""
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout)

    # -- worker -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = self._collect(batch)
            self._dispatch(batch)
            if stop:
                return

    def _collect(self, batch: list[_Job[T, R]]) -> bool:
        """Add what is already queued; wait up to max_wait only while others are queuing."""
        waited_until = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch_size:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                if len(batch) == 1 or time.perf_counter() >= waited_until:
                    return False  # idle: dispatch at once; or waited long enough
                try:
                    job = self._queue.get(timeout=max(0.0, waited_until - time.perf_counter()))
                except queue.Empty:
                    return False
            if job is None:
                return True
            batch.append(job)
        return False

    def _dispatch(self, batch: list[_Job[T, R]]) -> None:
        now = time.perf_counter()
        live = []
        for job in batch:
            if job.deadline is not None and now > job.deadline:
                job.future.set_exception(DeadlineExceeded(self.name, now - job.enqueued))
            elif job.future.set_running_or_notify_cancel():
                live.append(job)
        if not live:
            return
        wait = sum(now - job.enqueued for job in live) / len(live)
        started = time.perf_counter()
        try:
            results = list(self.predict([job.item for job in live]))
            if len(results) != len(live):
                raise RuntimeError(f"{self.name} returned {len(results)} results for "
                                   f"{len(live)} inputs")
        except Exception:  # noqa: BLE001 - isolate the failing items below
            self._one_by_one(live)
        else:
            for job, result in zip(live, results, strict=True):
                job.future.set_result(result)
        if self.observer is not None:
            self.observer(self.name, wait, time.perf_counter() - started, len(live))

    def _one_by_one(self, jobs: list[_Job[T, R]]) -> None:
        """A batch failed: rerun each item alone so one bad item fails only itself."""
        for job in jobs:
            try:
                job.future.set_result(self.predict([job.item])[0])
            except Exception as exc:  # noqa: BLE001 - delivered to its caller, not raised here
                job.future.set_exception(exc)


