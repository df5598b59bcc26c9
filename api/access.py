"""The API's access log: one JSON line per request, none dropped, none written on the hot path.

A request costs one tuple appended to a buffer. The buffer goes out as one log record
(its lines joined) when it holds `batch` entries, or `interval_s` after its first entry,
from a timer on the event loop, and at shutdown. Writing a record per request through
`logging` cost ~20% of the serving thread at load (record creation, a handler lock, a
queue hand-off and a flushed write each time); one record per batch costs a few percent.

The lines go to the `api.access` logger, which `api.app.configure_logging` gives a handler
of its own that writes the message as it is, so the output is plain JSON lines.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

logger = logging.getLogger("api.access")

# request id, method, path, status, duration in s, client address, wall-clock time
Entry = tuple[str, str, str, int, float, str, float]


class AccessLog:
    """Buffers access entries and writes them in batches."""

    def __init__(self, log: logging.Logger = logger, *, enabled: bool = True,
                 batch: int = 512, interval_s: float = 0.2) -> None:
        self.log = log
        self.enabled = enabled
        self.batch = batch
        self.interval_s = interval_s
        self._pending: list[Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self.written = 0  # entries handed to the logger so far

    def add(self, request_id: str, method: str, path: str, status: int, seconds: float,
            client: str) -> None:
        """Record one finished request (on the event loop, or any thread without one)."""
        if not self.enabled or not self.log.isEnabledFor(logging.INFO):
            return
        self._pending.append((request_id, method, path, status, seconds, client, time.time()))
        if len(self._pending) >= self.batch:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): write at once
                self.flush()
                return
            self._timer = loop.call_later(self.interval_s, self.flush)

    def flush(self) -> None:
        """Write what is buffered as one record."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        self.log.info("\n".join(line(entry) for entry in pending))
        self.written += len(pending)


def line(entry: Entry) -> str:
    """One access entry as a JSON object."""
    request_id, method, path, status, seconds, client, wall = entry
    return orjson.dumps({
        "event": "request", "time": round(wall, 6), "request_id": request_id,
        "method": method, "path": path, "status": status,
        "duration_ms": round(seconds * 1e3, 3), "client": client}).decode()
