"""Token buckets keyed by client, and who the client is.

One `TokenBuckets` per limit: the API's request rate per key or address, the failed-key
throttle, and the UI's predictions (the pages count against the API's own buckets).
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TokenBuckets:
    """`rate` tokens per second up to `burst` per key; thread-safe, bounded in keys.

    `take(key)` spends one token and returns 0, or returns the seconds until one is
    available. With `rate` 0 nothing is ever limited.
    """

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._tokens: dict[str, list[float]] = {}  # key -> [tokens, updated]
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """Spend a token of `key`: 0.0 if there was one, else seconds to wait for one."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            entry = self._tokens.get(key)
            if entry is None:
                if len(self._tokens) >= self.max_keys:
                    self._evict(now)
                entry = self._tokens[key] = [self.burst, now]
            tokens = min(self.burst, entry[0] + (now - entry[1]) * self.rate)
            entry[1] = now
            if tokens < 1.0:
                entry[0] = tokens
                return (1.0 - tokens) / self.rate
            entry[0] = tokens - 1.0
            return 0.0

    def remaining(self, key: str) -> int:
        """Whole tokens `key` has now."""
        with self._lock:
            entry = self._tokens.get(key)
        if entry is None:
            return int(self.burst)
        return int(min(self.burst, entry[0] + (time.monotonic() - entry[1]) * self.rate))

    def describe(self) -> str:
        """The limit in words, for headers and messages."""
        return f"{self.rate:g}/s; burst={self.burst:g}"

    def _evict(self, now: float) -> None:
        full = [k for k, (tokens, updated) in self._tokens.items()
                if tokens + (now - updated) * self.rate >= self.burst]
        for key in full or list(self._tokens)[: len(self._tokens) // 2]:
            del self._tokens[key]


def retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header (at least 1)."""
    return max(1, math.ceil(seconds))


def networks(cidrs: Iterable[str]) -> list[Network]:
    """Parsed CIDRs (addresses count as /32 or /128)."""
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


def is_in(address: str, nets: Sequence[Network]) -> bool:
    """True if `address` is an IP address inside one of `nets`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in nets)


def client_address(scope: Mapping[str, Any], trusted: Sequence[Network]) -> str:
    """The address to count a request against: the socket's peer, or, when the peer is a
    trusted proxy, the nearest X-Forwarded-For hop that is not one of ours. Headers from
    anyone else are ignored, so they cannot buy a fresh bucket or forge the logs."""
    peer = str((scope.get("client") or ("unknown", 0))[0])
    if not trusted or not is_in(peer, trusted):
        return peer
    forwarded = ",".join(value.decode("latin-1") for name, value in scope.get("headers", ())
                         if name == b"x-forwarded-for")
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not is_in(hop, trusted):
            return hop[:64]
    return peer


_default: TokenBuckets | None = None
_default_lock = threading.Lock()


def default_buckets(rate: float, burst: float) -> TokenBuckets:
    """The process-wide request buckets, shared by the API and the UI pages of the one
    process (created on first use with `rate` and `burst`)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = TokenBuckets(rate, burst)
        return _default
