"""Pure ASGI middleware (no BaseHTTPMiddleware): each applies to API paths only, so the
Streamlit UI sharing the process is untouched."""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

import anyio
import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body
from ml.metrics import Metrics

logger = logging.getLogger("api.access")

API_PREFIXES = ("/api/", "/health", "/metrics", "/openapi.json", "/docs")
PROTECTED_PREFIXES = ("/api/", "/metrics")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
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
    body = json.dumps(error_body(code, message, details, request_id)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def route_label(path: str, known: frozenset[str]) -> str:
    """A bounded-cardinality route name for metrics."""
    return path if path in known else "other"


class RequestContextMiddleware:
    """Request id (accepted or generated, echoed), security headers, access log, metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics, known_routes: Iterable[str]) -> None:
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
            self.metrics.record_request(route_label(path, self.known), scope["method"], status,
                                        elapsed, prediction=path.startswith("/api/"))
            if logger.isEnabledFor(logging.INFO):
                logger.info(orjson.dumps({
                    "event": "request", "request_id": request_id, "method": scope["method"],
                    "path": path, "status": status, "duration_ms": round(elapsed * 1e3, 3),
                    "client": (scope.get("client") or ("", 0))[0],
                }).decode())


class BodyLimitMiddleware:
    """413 for bodies over the limit: by Content-Length up front, else while streaming.
    408 for bodies that do not arrive within `timeout_s` (slow or stalled clients)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 10.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_api(scope):
            await self.app(scope, receive, send)
            return
        request_id = scope.get("state", {}).get("request_id")
        length = Headers(scope=scope).get("content-length")
        if length is not None:
            if not length.isdigit():
                await send_error(send, 400, "bad_request", "invalid Content-Length",
                                 request_id=request_id)
                return
            if int(length) > self.max_bytes:
                await self._too_large(send, request_id)
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
                if received > self.max_bytes:
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
                await self._too_large(send, request_id)
        except _BodyTooSlow:
            if not started:
                await send_error(send, 408, "request_timeout",
                                 f"the request body did not arrive within {self.timeout_s:g}s",
                                 request_id=request_id, details={"timeout_s": self.timeout_s},
                                 headers={"connection": "close"})

    async def _too_large(self, send: Send, request_id: str | None) -> None:
        await send_error(send, 413, "payload_too_large",
                         f"request body is larger than {self.max_bytes} bytes",
                         request_id=request_id, details={"limit": self.max_bytes},
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
    """When keys are configured, /api/* and /metrics need one of them (constant-time check)."""

    def __init__(self, app: ASGIApp, keys: Iterable[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys if k]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (not self.keys or scope["type"] != "http"
                or not str(scope["path"]).startswith(PROTECTED_PREFIXES)):
            await self.app(scope, receive, send)
            return
        key = api_key_of(Headers(scope=scope))
        if key and self.matches(key.encode()):
            scope.setdefault("state", {})["api_key_id"] = _key_id(key)
            await self.app(scope, receive, send)
            return
        await send_error(send, 401, "unauthorized",
                         "missing or invalid API key: send 'Authorization: Bearer <key>' or "
                         "'X-API-Key: <key>'",
                         request_id=scope.get("state", {}).get("request_id"),
                         headers={"www-authenticate": "Bearer"})

    def matches(self, candidate: bytes) -> bool:
        """Compare against every key without an early exit."""
        found = False
        for key in self.keys:
            found |= hmac.compare_digest(candidate, key)
        return found


def _key_id(key: str) -> str:
    import hashlib

    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


class TokenBucket:
    """`rate` tokens per second up to `burst`; one token per request."""

    __slots__ = ("tokens", "updated")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens = burst
        self.updated = now


class RateLimitMiddleware:
    """Per API key (or client address) token buckets on /api/*; 429 with Retry-After."""

    def __init__(self, app: ASGIApp, rate: float, burst: int,
                 trusted_proxies: Iterable[str] = (), max_clients: int = 100_000) -> None:
        self.app = app
        self.rate = rate
        self.burst = float(burst)
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
        self.max_clients = max_clients
        self.buckets: dict[str, TokenBucket] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.rate <= 0 or scope["type"] != "http" or not str(scope["path"]).startswith("/api/"):
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        client = self.client_of(scope)
        bucket = self.buckets.get(client)
        if bucket is None:
            if len(self.buckets) >= self.max_clients:
                self._evict(now)
            bucket = self.buckets[client] = TokenBucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        limit_headers = {"x-ratelimit-limit": f"{self.rate:g}/s; burst={self.burst:g}"}
        if bucket.tokens < 1.0:
            retry_after = max(1, math.ceil((1.0 - bucket.tokens) / self.rate))
            await send_error(send, 429, "rate_limited",
                             f"rate limit exceeded; retry after {retry_after}s",
                             request_id=scope.get("state", {}).get("request_id"),
                             details={"retry_after_s": retry_after},
                             headers={**limit_headers, "retry-after": str(retry_after),
                                      "x-ratelimit-remaining": "0"})
            return
        bucket.tokens -= 1.0
        remaining = str(int(bucket.tokens))

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["x-ratelimit-limit"] = limit_headers["x-ratelimit-limit"]
                headers["x-ratelimit-remaining"] = remaining
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def client_of(self, scope: Scope) -> str:
        """Who to count against: the API key, else the client address (proxy-aware)."""
        key_id = scope.get("state", {}).get("api_key_id")
        if key_id:
            return str(key_id)
        peer = (scope.get("client") or ("unknown", 0))[0]
        if self.trusted and self._is_trusted(peer):
            forwarded = Headers(scope=scope).get("x-forwarded-for", "")
            # Walk from the nearest hop; the first address not ours is the client.
            for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
                if not self._is_trusted(hop):
                    return f"ip:{hop}"
        return f"ip:{peer}"

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def _evict(self, now: float) -> None:
        full = [k for k, b in self.buckets.items()
                if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for key in full or list(self.buckets)[: len(self.buckets) // 2]:
            del self.buckets[key]
