"""Token buckets keyed by client, and who the client is.

One `TokenBuckets` per limit: the API's request rate per key or address, the failed-key
throttle, and the UI's predictions (the pages count against the API's own buckets).

`SharedBuckets` keeps the request buckets in Redis (ML_REDIS_URL), so that a key gets its
limit once however many API processes or Ray Serve ingress replicas serve it. When Redis
cannot be reached, ML_REDIS_FAILURE_MODE decides: `open` (the default) limits with each
process's own buckets until Redis answers again, `closed` refuses with 503.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ml.errors import ConfigError

if TYPE_CHECKING:
    from api.config import ApiSettings

logger = logging.getLogger("api")

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


# One bucket, updated atomically in Redis with Redis's own clock (the processes' clocks may
# disagree): refill by the time since the last update, spend a token if there is one.
# Returns the seconds to wait (0: allowed) and the tokens left, as strings (Redis would
# truncate Lua numbers to integers).
BUCKET_SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens < 1 then wait = (1 - tokens) / rate else tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate + 1) * 1000))
return {tostring(wait), tostring(tokens)}
"""


class SharedBuckets(TokenBuckets):
    """`TokenBuckets` kept in Redis: every process that shares the Redis shares the buckets.

    One round trip per request (a Lua script: atomic, on Redis's clock). When Redis cannot
    be reached the request is judged by `fail_closed`: False limits it with this process's
    own buckets (the `TokenBuckets` it also is), True refuses it (503). Either way Redis is
    not asked again for `retry_s`, so an outage costs one timeout per `retry_s`, not one per
    request.
    """

    def __init__(self, rate: float, burst: float, url: str, *, fail_closed: bool = False,
                 timeout_s: float = 0.1, retry_s: float = 1.0,
                 prefix: str = "ml:ratelimit:") -> None:
        super().__init__(rate, burst)
        try:
            import redis
        except ImportError:
            raise ConfigError("ML_REDIS_URL", url, "a Redis URL with the redis client "
                              "installed (pip install -r requirements-ray.txt)") from None
        self.url = url
        self.fail_closed = fail_closed
        self.retry_s = retry_s
        self.prefix = prefix
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                            socket_connect_timeout=timeout_s)
        self._script = self._client.register_script(BUCKET_SCRIPT)
        self._down_until = 0.0  # monotonic time before which Redis is not asked
        self._left: dict[str, int] = {}  # tokens each key had after its last take

    def take(self, key: str) -> float:
        """Spend a token of `key` in Redis: 0.0 if there was one, else seconds to wait."""
        if self.rate <= 0:
            return 0.0
        if time.monotonic() >= self._down_until:
            try:
                wait, tokens = self._script(keys=[self.prefix + key],
                                            args=[self.rate, self.burst])
            except self._errors as exc:
                self._fail(exc)
            else:
                if self._down_until:
                    self._down_until = 0.0
                    logger.warning("rate limits: Redis at %s answers again; limits are "
                                   "shared again", self._client_address())
                if len(self._left) >= self.max_keys:
                    self._left.clear()
                self._left[key] = int(float(tokens))
                return float(wait)
        if self.fail_closed:
            raise _unavailable()
        self._left.pop(key, None)
        return super().take(key)

    def remaining(self, key: str) -> int:
        """Whole tokens `key` had after its last take (this process's own while Redis is
        down)."""
        left = self._left.get(key)
        return super().remaining(key) if left is None else left

    @property
    def shared(self) -> bool:
        """True while Redis answers."""
        return not self._down_until

    def close(self) -> None:
        """Release the connections to Redis."""
        self._client.close()

    def _fail(self, exc: Exception) -> None:
        if not self._down_until:
            logger.warning("rate limits: Redis at %s unreachable (%s: %s); failing %s",
                           self._client_address(), type(exc).__name__, exc,
                           "closed: requests get 503" if self.fail_closed else
                           "open: each process limits with its own buckets")
        self._down_until = time.monotonic() + self.retry_s

    def _client_address(self) -> str:
        kwargs = self._client.connection_pool.connection_kwargs
        return f"{kwargs.get('host', kwargs.get('path', '?'))}:{kwargs.get('port', '')}"


def _unavailable() -> Exception:
    """503 for a request whose rate limit cannot be checked (fail closed)."""
    from api.middleware import Refusal  # the middleware imports this module

    return Refusal(503, "rate_limit_unavailable",
                   "the rate-limit store cannot be reached and this server fails closed "
                   "(ML_REDIS_FAILURE_MODE=closed); retry shortly",
                   details={"retry_after_s": 1, "settings": ["ML_REDIS_URL",
                                                             "ML_REDIS_FAILURE_MODE"]},
                   headers={"retry-after": "1"})


def shared_buckets(settings: ApiSettings) -> TokenBuckets:
    """The request buckets `settings` ask for: in Redis when ML_REDIS_URL is set, else this
    process's own."""
    if not settings.redis_url:
        return TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
    return SharedBuckets(settings.rate_limit_per_second, settings.rate_limit_burst,
                         settings.redis_url,
                         fail_closed=settings.redis_failure_mode == "closed")


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
