"""A bounded LRU cache of prediction results, with hit and miss counters."""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Any


class PredictionCache:
    """Least-recently-used results keyed by the full query; `entries=0` turns it off.

    Results are frozen dataclasses, so a cached one can be handed to many callers.
    """

    def __init__(self, entries: int) -> None:
        if entries < 0:
            raise ValueError("entries must be >= 0")
        self.entries = entries
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.entries > 0

    def get(self, key: Hashable) -> Any | None:
        """The cached result for `key`, or None (counted as a miss)."""
        if not self.entries:
            return None
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: Any) -> None:
        """Remember `value`; the least recently used entry goes when full."""
        if not self.entries:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.entries:
                self._data.popitem(last=False)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Off for a while (a benchmark must measure the model, not memory), then back."""
        entries, self.entries = self.entries, 0
        try:
            yield
        finally:
            self.entries = entries

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, float]:
        """Size, hits, misses and hit rate."""
        with self._lock:
            looked = self.hits + self.misses
            return {"entries": len(self._data), "capacity": self.entries, "hits": self.hits,
                    "misses": self.misses,
                    "hit_rate": round(self.hits / looked, 4) if looked else 0.0}
