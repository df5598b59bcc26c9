"""Small real models of the contract for the cluster's tests, named in ML_MODELS as
`name=tests.cluster.fakes:build_...` (the replicas import them from this checkout): one whose
calls take as long as asked, one that cannot build."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.contract import BatchLimits, ModelBase
from ml.errors import InvalidInput


class SlowQuery(msgspec.Struct, frozen=True):
    value: int
    sleep_ms: int = 0


class SlowResult(msgspec.Struct, frozen=True):
    double: int


class Slow(ModelBase[SlowQuery, SlowQuery, SlowResult]):
    """Doubles numbers; a call lasts as long as the longest `sleep_ms` in it."""

    name = "slow"
    version = "slow-v1"
    Query = SlowQuery
    Result = SlowResult
    batch_limits = BatchLimits(max_batch=8, max_wait_ms=20.0, max_queue=64)

    def __init__(self) -> None:
        self.calls: list[int] = []  # the size of each call

    def prepare(self, query: SlowQuery) -> SlowQuery:
        if query.value > 1000:
            raise InvalidInput("value must be at most 1000", field="value", limit=1000)
        return query

    def predict(self, items: Sequence[SlowQuery]) -> list[SlowResult]:
        self.calls.append(len(items))
        time.sleep(max(item.sleep_ms for item in items) / 1e3)
        return [SlowResult(2 * item.value) for item in items]

    def examples(self) -> list[SlowQuery]:
        return [SlowQuery(1), SlowQuery(2)]

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}


def build_slow(settings: Settings, store: ArtifactStore) -> Slow:
    return Slow()


def build_broken(settings: Settings, store: ArtifactStore) -> Slow:
    raise OSError("weights file missing")
