"""The memory judgement the reliability tests share: RSS growth beyond allocator noise is a leak."""

from __future__ import annotations

from typing import Any

import httpx
import psutil

from benchmarks import hostile

# Measured on a 2-core machine with other work running, against real servers (RSS after a
# warming round, then after the measured traffic): the catalogue loop below (207 requests)
# grew RSS by -2.2 to +2.1 MiB in 28 of 29 runs (some with a soak running beside them) and by
# +6.4 MiB once; soaks by +1.2 to +1.8 MiB over 15 s (44k-51k requests), +0.4 MiB over 40 s
# (79k) and +0.4 to +0.5 MiB over 60 s (170k-188k); RELIABILITY.md: +0.0 MiB for both. The
# growth comes in allocator steps that do not scale with traffic, so the margin is a
# constant: about twice the largest step seen.
NOISE_MIB = 12.0
# No slope shows in those runs (the longest soaks grew least); 16 B a request keeps soaks
# many times longer than measured clear of false alarms, while a leak of ~130 B a request
# still fails a 60 s soak and one of 60 KiB a request fails the catalogue loop.
PER_REQUEST_BYTES = 16


def leak_budget_mib(requests: int) -> float:
    """The RSS growth (MiB) that `requests` requests may cause without being called a leak."""
    return NOISE_MIB + requests * PER_REQUEST_BYTES / 2**20


def assert_no_leak(before_mib: float, after_mib: float, requests: int) -> None:
    """Fail when RSS grew by more than the budget over `requests` requests."""
    growth = after_mib - before_mib
    budget = leak_budget_mib(requests)
    # raised, not asserted: this module is not rewritten by pytest, and -O would drop it
    if growth > budget:
        raise AssertionError(
            f"RSS grew {growth:+.1f} MiB ({before_mib:.1f} -> {after_mib:.1f}) over "
            f"{requests} requests, {growth * 2**20 / max(requests, 1):.0f} B a "
            f"request; the budget is {budget:.1f} MiB")


def assert_soak_did_not_leak(figures: dict[str, Any]) -> None:
    """The judgement on a `benchmarks.reliability.soak` run."""
    assert_no_leak(figures["before"]["rss_mb"], figures["after"]["rss_mb"],
                   figures["answered"])


def catalogue_growth(client: httpx.Client, pid: int, rounds: int = 3) -> tuple[float, float, int]:
    """Every hostile case once (warming every code path: decoders, parsers), then `rounds`
    more, each answered as documented; RSS (MiB) of process `pid` before and after those
    rounds, and how many requests they sent."""
    process = psutil.Process(pid)
    send = hostile.httpx_sender(client)
    cases = hostile.cases()
    first = hostile.run(send, cases)
    wrong = [(o.case.name, o.status, o.code) for o in first if not o.ok]
    assert not wrong, wrong
    before = process.memory_info().rss / 2**20
    for _ in range(rounds):
        again = hostile.run(send, cases)
        wrong = [(o.case.name, o.status, o.code) for o in again if not o.ok]
        assert not wrong, wrong
    after = process.memory_info().rss / 2**20
    return before, after, rounds * len(cases)
