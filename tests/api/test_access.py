"""The access log: every request one JSON line, written in batches, none lost."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys

import pytest

from api.access import AccessLog


class Collect(logging.Handler):
    """Keeps the records a logger emits."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log() -> tuple[logging.Logger, Collect]:
    logger = logging.getLogger("test.access")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = Collect()
    logger.handlers = [handler]
    return logger, handler


def lines(handler: Collect) -> list[dict[str, object]]:
    return [json.loads(line) for r in handler.records for line in r.getMessage().splitlines()]


def test_a_full_batch_is_written_at_once_as_one_record(log) -> None:  # type: ignore[no-untyped-def]
    logger, handler = log
    access = AccessLog(logger, batch=3, interval_s=60)

    async def main() -> None:
        for i in range(7):
            access.add(f"id{i}", "POST", "/api/predict/sentiment", 200, 0.001, "127.0.0.1")

    asyncio.run(main())
    assert len(handler.records) == 2 and access.written == 6  # two full batches
    access.flush()
    assert [x["request_id"] for x in lines(handler)] == [f"id{i}" for i in range(7)]
    assert lines(handler)[0] == {**lines(handler)[0], "event": "request", "method": "POST",
                                 "status": 200, "duration_ms": 1.0, "client": "127.0.0.1"}


def test_a_partial_batch_goes_out_after_the_interval_on_the_loop(log) -> None:  # type: ignore[no-untyped-def]
    logger, handler = log

    async def main() -> int:
        access = AccessLog(logger, batch=100, interval_s=0.05)
        access.add("one", "GET", "/health", 200, 0.0, "::1")
        before = len(handler.records)
        await asyncio.sleep(0.2)
        return before

    assert asyncio.run(main()) == 0
    assert [x["request_id"] for x in lines(handler)] == ["one"]


def test_without_a_loop_each_entry_is_written_at_once(log) -> None:  # type: ignore[no-untyped-def]
    logger, handler = log
    AccessLog(logger, batch=100).add("sync", "GET", "/health", 200, 0.0, "")
    assert [x["request_id"] for x in lines(handler)] == ["sync"]


def test_nothing_is_written_when_it_is_off(log) -> None:  # type: ignore[no-untyped-def]
    logger, handler = log
    access = AccessLog(logger, enabled=False, batch=1)
    access.add("x", "GET", "/health", 200, 0.0, "")
    access.flush()
    assert handler.records == []


def test_shutdown_writes_what_is_pending(make_client, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    client = make_client(rate_limit_per_second=0.0)
    client.app.state.service.access.interval_s = 3600.0  # only shutdown can write it now
    with caplog.at_level(logging.INFO, logger="api.access"):
        client.get("/health/live", headers={"x-request-id": "last-one"})
        assert "last-one" not in caplog.text
        client.__exit__(None, None, None)
    assert '"request_id":"last-one"' in caplog.text


ENDED_BY_SIGTERM = '''
import asyncio, logging, os, signal, time
from api.app import serving
from api.config import ApiSettings
from api.service import Service
from ml.registry import Registry

async def main():
    service = Service.over(Registry(entries={}), ApiSettings.from_env())
    async with serving(service):
        (queued,) = logging.getLogger().handlers
        (stream,) = queued.drain.handlers
        write = stream.emit
        stream.emit = lambda record: (time.sleep(0.5), write(record))  # a slow stderr
        service.access.interval_s = 3600.0  # only the shutdown writes it
        service.access.add("last-one", "POST", "/api/predict/image", 200, 2.0, "127.0.0.1")
    os.kill(os.getpid(), signal.SIGTERM)  # as uvicorn re-raises it after the lifespan

asyncio.run(main())
'''


def test_lines_flushed_at_shutdown_are_written_before_the_process_ends_by_signal() -> None:
    """uvicorn re-raises SIGTERM after the lifespan shutdown, and a process ended by a
    signal runs no atexit hook: the shutdown drains the log queue itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_")}
    done = subprocess.run([sys.executable, "-c", ENDED_BY_SIGTERM], capture_output=True,
                          text=True, timeout=60, env={**env, "ML_WARMUP": "false"})
    assert done.returncode == -signal.SIGTERM, done.stderr
    assert '"request_id":"last-one"' in done.stderr
