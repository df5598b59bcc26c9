"""Pure ASGI middleware (no BaseHTTPMiddleware): each applies to API paths only, so the
Streamlit UI sharing the process is untouched."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.encoding import encode
from api.errors import error_body
from api.metrics import HttpMetrics
from api.ratelimit import TokenBuckets, client_address, networks, retry_after

logger = logging.getLogger("api.access")

API_PREFIXES = ("/api/", "/health", "/metrics", "/openapi.json", "/docs")
PROTECTED_PREFIXES = ("/api/", "/metrics")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_UINT = re.compile(r"[0-9]{1,18}")
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


def is_api(scope: Scope) -> bool:
    """True for HTTP requests to the API's paths."""
    return scope["type"] == "http" and str(scope["path"]).startswith(API_PREFIXES)


async def send_error(send: Send, status: int, code: str, message: str, *,
                     request_id: str | None = None, details: dict[str, Any] | None = None,
                     headers: dict[str, str] | None = None) -> None:
    """Send a JSON error from middleware (before any route ran)."""
    body = encode(error_body(code, message, details, request_id))
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def uint(text: str) -> int | None:
    """`text` as a non-negative integer if it is plain ASCII digits, else None (str.isdigit()
    also accepts digits such as "²" that int() refuses)."""
    text = text.strip()
    return int(text) if _UINT.fullmatch(text) else None


def route_label(path: str, known: frozenset[str]) -> str:
    """A bounded-cardinality route name for metrics."""
    return path if path in known else "other"


class RequestContextMiddleware:
    """Request id (accepted or generated, echoed), security headers, access log, metrics."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, known_routes: Iterable[str]
                 ) -> None:
        self.app = app
        self.metrics = metrics
        self.known = frozenset(known_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_api(scope):
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            logger.exception("request %s failed", request_id)
            if not response_started:
                await send_error(send_wrapper, 500, "internal_error",
                                 "internal server error; quote the request id when reporting it",
                                 request_id=request_id)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            path = str(scope["path"])
            self.metrics.record(route_label(path, self.known), scope["method"], status,
                                elapsed, prediction=path.startswith("/api/"))
            if logger.isEnabledFor(logging.INFO):
                logger.info(orjson.dumps({
                    "event": "request", "request_id": request_id, "method": scope["method"],
                    "path": path, "status": status, "duration_ms": round(elapsed * 1e3, 3),
                    "client": (scope.get("client") or ("", 0))[0],
                }).decode())


class BodyLimitMiddleware:
    """413 for bodies over their route's limit: by Content-Length up front, else while
    streaming. 408 for bodies that do not arrive within `timeout_s` (slow or stalled
    clients). `max_bytes` applies to every path not in `per_path`."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 10.0,
                 per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_api(scope):
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        limit = self.per_path.get(scope["path"], self.max_bytes)
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            declared = uint(length)
            if declared is None:
                await send_error(send, 400, "bad_request", "invalid Content-Length",
                                 request_id=request_id)
                return
            if declared > limit:
                await self._too_large(send, request_id, limit)
                return
        received = 0
        started = False
        deadline: float | None = None

        async def limited_receive() -> Message:
            nonlocal received, deadline
            if deadline is None:
                deadline = time.monotonic() + self.timeout_s
            try:
                with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                raise _BodyTooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._too_large(send, request_id, limit)
        except _BodyTooSlow:
            if not started:
                await send_error(send, 408, "request_timeout",
                                 f"the request body did not arrive within {self.timeout_s:g}s",
                                 request_id=request_id, details={"timeout_s": self.timeout_s},
                                 headers={"connection": "close"})

    async def _too_large(self, send: Send, request_id: str | None, limit: int) -> None:
        await send_error(send, 413, "payload_too_large",
                         f"request body is larger than {limit} bytes",
                         request_id=request_id, details={"limit": limit},
                         headers={"connection": "close"})


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


def api_key_of(headers: Headers) -> str | None:
    """The key from `Authorization: Bearer KEY` or `X-API-Key: KEY`; never the query string."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    return headers.get("x-api-key")


class AuthMiddleware:
    """When keys are configured, /api/* and /metrics need one of them.

    Keys are compared with `compare` (hmac.compare_digest: constant time) against every
    configured key, without an early exit. A client that keeps sending wrong keys is
    throttled: after `failure_burst` failures, at `failure_rate` per second, it gets 429
    without its key even being checked, so guessing keys is slow whatever the key space.
    """

    def __init__(self, app: ASGIApp, keys: Iterable[str], *,
                 trusted_proxies: Iterable[str] = (), failure_rate: float = 10 / 60,
                 failure_burst: int = 20,
                 compare: Callable[[bytes, bytes], bool] = hmac.compare_digest) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys if k]
        self.trusted = networks(trusted_proxies)
        self.failures = TokenBuckets(failure_rate, failure_burst)
        self.compare = compare

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keys or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = client_address(scope, self.trusted)
        if not str(scope["path"]).startswith(PROTECTED_PREFIXES):
            # open paths (probes, /health, docs) answer everyone; a valid key shows more
            key = api_key_of(Headers(scope=scope))
            if key and self.failures.remaining(client) >= 1:
                if self.matches(key.encode()):
                    scope.setdefault("state", {})["api_key_id"] = _key_id(key)
                else:
                    self.failures.take(client)
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        if self.failures.remaining(client) < 1:
            wait = retry_after(self.failures.take(client))
            await send_error(send, 429, "too_many_failed_keys",
                             f"too many requests with a wrong API key from this client; "
                             f"retry after {wait}s", request_id=request_id,
                             details={"retry_after_s": wait},
                             headers={"retry-after": str(wait)})
            return
        key = api_key_of(Headers(scope=scope))
        if key and self.matches(key.encode()):
            scope.setdefault("state", {})["api_key_id"] = _key_id(key)
            await self.app(scope, receive, send)
            return
        self.failures.take(client)
        await send_error(send, 401, "unauthorized",
                         "missing or invalid API key: send 'Authorization: Bearer <key>' or "
                         "'X-API-Key: <key>'", request_id=request_id,
                         headers={"www-authenticate": "Bearer"})

    def matches(self, candidate: bytes) -> bool:
        """Compare against every key without an early exit."""
        found = False
        for key in self.keys:
            found |= self.compare(candidate, key)
        return found


def _key_id(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


class RateLimitMiddleware:
    """Per API key (or client address) token buckets on /api/*; 429 with Retry-After."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets,
                 trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.buckets = buckets
        self.trusted = networks(trusted_proxies)
        self.limit_header = buckets.describe().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (not self.buckets.enabled or scope["type"] != "http"
                or not str(scope["path"]).startswith("/api/")):
            await self.app(scope, receive, send)
            return
        client = self.client_of(scope)
        wait = self.buckets.take(client)
        if wait:
            seconds = retry_after(wait)
            await send_error(
                send, 429, "rate_limited",
                f"rate limit of {self.buckets.rate:g} requests/s (burst "
                f"{self.buckets.burst:g}) per API key or client exceeded; retry after "
                f"{seconds}s. The server's operator sets it with ML_RATE_LIMIT_PER_SECOND "
                "and ML_RATE_LIMIT_BURST.",
                request_id=scope.get("state", {}).get("request_id"),
                details={"retry_after_s": seconds, "limit_per_second": self.buckets.rate,
                         "burst": self.buckets.burst,
                         "settings": ["ML_RATE_LIMIT_PER_SECOND", "ML_RATE_LIMIT_BURST"]},
                headers={"x-ratelimit-limit": self.buckets.describe(),
                         "retry-after": str(seconds), "x-ratelimit-remaining": "0"})
            return
        remaining = str(self.buckets.remaining(client)).encode()
        limit_header = self.limit_header

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()),
                                      (b"x-ratelimit-limit", limit_header),
                                      (b"x-ratelimit-remaining", remaining)]
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def client_of(self, scope: Scope) -> str:
        """Who to count against: the API key, else the client address (proxy-aware)."""
        key_id = scope.get("state", {}).get("api_key_id")
        if key_id:
            return str(key_id)
        return f"ip:{client_address(scope, self.trusted)}"
