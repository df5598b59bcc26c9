"""The red team's attack classes against the real one-process server, each within bounds:
no case raises the server's RSS by more than ~100 MiB, stalls its event loop by more than
~250 ms, answers with a 5xx (a documented 503 with Retry-After aside) or makes the server
connect to the canary listener; and after all of them RSS is back within 20% of where it
started. The cases themselves are in benchmarks/redteam.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks import redteam
from ml.config import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def attacked(settings: Settings, registry, tmp_path_factory: pytest.TempPathFactory  # type: ignore[no-untyped-def]
             ) -> Iterator[dict[str, Any]]:
    registry.warmup()
    with redteam.attacked_server(tmp_path_factory.mktemp("redteam"), settings.cache_dir) as (
            target, probe, canary):
        yield {"target": target, "probe": probe, "canary": canary,
               "baseline": redteam.baseline(target), "done": set()}


@pytest.mark.parametrize("case", redteam.CASES, ids=[c.run.__name__ for c in redteam.CASES])
def test_attack_is_contained(attacked: dict[str, Any], case: redteam.Case) -> None:
    row = redteam.run_case(attacked["target"], attacked["probe"], attacked["canary"], case)
    attacked["done"].add(case.run.__name__)
    assert row.failure is None, row.failure
    assert row.canary_hits == 0, "the server connected where no request may reach"
    assert not [s for s in row.statuses if int(s) >= 500 and int(s) != 503], row.statuses
    assert row.rss_mb <= redteam.BOUNDS["rss_mb"], row
    assert row.stall_ms <= redteam.BOUNDS["stall_ms"], row


def test_memory_returns_to_its_baseline_after_the_attacks(attacked: dict[str, Any]) -> None:
    for case in redteam.CASES:  # every attack first, also when this test runs on its own
        if case.run.__name__ not in attacked["done"]:
            redteam.run_case(attacked["target"], attacked["probe"], attacked["canary"], case)
    time.sleep(3.0)
    now = redteam.rss_mb(attacked["target"].pid)
    assert now <= attacked["baseline"] * 1.2, (attacked["baseline"], now)
