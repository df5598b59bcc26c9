"""The API's middleware: one pure-ASGI layer (`ApiMiddleware`) over the policies it applies,
each a small class of its own (`BodyLimit`, `Auth`, `RateLimit`). It applies to API paths
only, so the Streamlit UI sharing the process is untouched."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.access import AccessLog
from api.encoding import encode
from api.errors import error_body, inference_error_body
from api.metrics import HttpMetrics
from api.ratelimit import TokenBuckets, client_address, networks, retry_after

logger = logging.getLogger("api")

API_PREFIXES = ("/api/", "/health", "/metrics", "/openapi.json", "/docs", "/v2")
# /v2 itself (server metadata) is protected too; /v2/health/* is open like /health
PROTECTED_PREFIXES = ("/api/", "/metrics", "/v2/models")
# rate limited, and counted as predictions in the JSON metrics
MODEL_PREFIXES = ("/api/", "/v2/models/")
INFERENCE_PREFIX = "/v2"  # the Open Inference Protocol's routes: its own error shape
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


def is_protected(path: str) -> bool:
    """True for the paths that need a key when keys are configured."""
    return path.startswith(PROTECTED_PREFIXES) or path == INFERENCE_PREFIX


async def send_error(send: Send, status: int, code: str, message: str, *,
                     request_id: str | None = None, details: dict[str, Any] | None = None,
                     headers: dict[str, str] | None = None, path: str = "") -> None:
    """Send a JSON error from middleware (before any route ran), in the shape of the
    request's `path` (the Open Inference Protocol's own on /v2)."""
    body = (inference_error_body(message) if path.startswith(INFERENCE_PREFIX)
            else encode(error_body(code, message, details, request_id)))
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


class RequestIds:
    """Request ids that cost a counter step: a random per-process prefix and a count, 32 hex
    characters like a UUID's, unique across processes and restarts (uuid4 read the OS's
    random source for every request: ~10% of the serving thread at load)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


def header(scope: Scope, name: bytes) -> str | None:
    """One request header's value (the first), without building a Headers object."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def api_key_of(scope: Scope) -> str | None:
    """The key from `Authorization: Bearer KEY` or `X-API-Key: KEY`; never the query string."""
    authorization = header(scope, b"authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    return header(scope, b"x-api-key")


class Refusal(Exception):
    """A request the API layer answers itself, before any handler: status, code, message."""

    def __init__(self, status: int, code: str, message: str, *,
                 details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details
        self.headers = headers


class Auth:
    """When keys are configured, /api/*, /metrics and /v2 (but /v2/health/*) need one of them.

    Keys are compared with `compare` (hmac.compare_digest: constant time) against every
    configured key, without an early exit. A client that keeps sending wrong keys is
    throttled: after `failure_burst` failures, at `failure_rate` per second, it gets 429
    without its key even being checked, so guessing keys is slow whatever the key space.
    """

    def __init__(self, keys: Iterable[str], *, failure_rate: float = 10 / 60,
                 failure_burst: int = 20,
                 compare: Callable[[bytes, bytes], bool] = hmac.compare_digest) -> None:
        self.keys = [k.encode() for k in keys if k]
        self.failures = TokenBuckets(failure_rate, failure_burst)
        self.compare = compare
        self._ids = {key.decode(): _key_id(key.decode()) for key in self.keys}

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def check(self, scope: Scope, client: str) -> None:
        """Admit the request (noting its key's id in the scope's state) or raise Refusal."""
        if not is_protected(str(scope["path"])):
            # open paths (probes, /health, docs) answer everyone; a valid key shows more
            key = api_key_of(scope)
            if key and self.failures.remaining(client) >= 1:
                if self.matches(key.encode()):
                    scope["state"]["api_key_id"] = self._ids[key]
                else:
                    self.failures.take(client)
            return
        if self.failures.remaining(client) < 1:
            wait = retry_after(self.failures.take(client))
            raise Refusal(429, "too_many_failed_keys",
                          f"too many requests with a wrong API key from this client; "
                          f"retry after {wait}s", details={"retry_after_s": wait},
                          headers={"retry-after": str(wait)})
        key = api_key_of(scope)
        if key and self.matches(key.encode()):
            scope["state"]["api_key_id"] = self._ids[key]
            return
        self.failures.take(client)
        raise Refusal(401, "unauthorized",
                      "missing or invalid API key: send 'Authorization: Bearer <key>' or "
                      "'X-API-Key: <key>'", headers={"www-authenticate": "Bearer"})

    def matches(self, candidate: bytes) -> bool:
        """Compare against every key without an early exit."""
        found = False
        for key in self.keys:
            found |= self.compare(candidate, key)
        return found


def _key_id(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


class RateLimit:
    """Per API key (or client address) token buckets on /api/* and /v2/models/*; 429 with
    Retry-After.

    `exempt(scope)`, when given, lets a request through uncounted: the one process's own
    live benchmark run, which proves itself with a secret only that process knows."""

    def __init__(self, buckets: TokenBuckets,
                 exempt: Callable[[Scope], bool] | None = None) -> None:
        self.buckets = buckets
        self.exempt = exempt
        self.limit_header = buckets.describe().encode()

    def check(self, scope: Scope, client: str) -> list[tuple[bytes, bytes]]:
        """Spend a token of the request's key or client: the headers that say what is left,
        or Refusal (429) when there is none."""
        if not self.buckets.enabled or not str(scope["path"]).startswith(MODEL_PREFIXES):
            return []
        if self.exempt is not None and self.exempt(scope):
            return []
        who = self.client_of(scope, client)
        wait = self.buckets.take(who)
        if wait:
            seconds = retry_after(wait)
            raise Refusal(
                429, "rate_limited",
                f"rate limit of {self.buckets.rate:g} requests/s (burst "
                f"{self.buckets.burst:g}) per API key or client exceeded; retry after "
                f"{seconds}s. The server's operator sets it with ML_RATE_LIMIT_PER_SECOND "
                "and ML_RATE_LIMIT_BURST.",
                details={"retry_after_s": seconds, "limit_per_second": self.buckets.rate,
                         "burst": self.buckets.burst,
                         "settings": ["ML_RATE_LIMIT_PER_SECOND", "ML_RATE_LIMIT_BURST"]},
                headers={"x-ratelimit-limit": self.buckets.describe(),
                         "retry-after": str(seconds), "x-ratelimit-remaining": "0"})
        return [(b"x-ratelimit-limit", self.limit_header),
                (b"x-ratelimit-remaining", str(self.buckets.remaining(who)).encode())]

    @staticmethod
    def client_of(scope: Scope, client: str) -> str:
        """Who to count against: the API key, else the client address."""
        key_id = scope.get("state", {}).get("api_key_id")
        return str(key_id) if key_id else f"ip:{client}"


class BodyLimit:
    """413 for bodies over their route's limit: by Content-Length up front, else while
    streaming. 408 for bodies that do not arrive within `timeout_s` (slow or stalled
    clients). `max_bytes` applies to every path not in `per_path`."""

    def __init__(self, max_bytes: int, timeout_s: float = 10.0,
                 per_path: dict[str, int] | None = None) -> None:
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})
        self.timeout_s = timeout_s

    def limit_of(self, scope: Scope) -> int:
        """The path's limit, after checking a declared Content-Length against it."""
        limit = self.per_path.get(scope["path"], self.max_bytes)
        length = header(scope, b"content-length")
        if length is not None:
            declared = uint(length)
            if declared is None:
                raise Refusal(400, "bad_request", "invalid Content-Length")
            if declared > limit:
                raise self.too_large(limit)
        return limit

    def too_large(self, limit: int) -> Refusal:
        return Refusal(413, "payload_too_large", f"request body is larger than {limit} bytes",
                       details={"limit": limit}, headers={"connection": "close"})

    def too_slow(self) -> Refusal:
        return Refusal(408, "request_timeout",
                       f"the request body did not arrive within {self.timeout_s:g}s",
                       details={"timeout_s": self.timeout_s}, headers={"connection": "close"})

    def receive(self, receive: Receive, limit: int) -> Receive:
        """`receive` that counts the body against `limit` and keeps the body deadline."""
        received = 0
        deadline: float | None = None

        async def limited_receive() -> Message:
            nonlocal received, deadline
            if deadline is None:
                deadline = time.monotonic() + self.timeout_s
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                raise self.too_slow() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self.too_large(limit)
            return message

        return limited_receive


_SECURITY_HEADERS = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


class ApiMiddleware:
    """Everything the API does around a handler, as one pure-ASGI layer: request id
    (accepted or generated, echoed), security headers, body limits and deadline, API keys,
    rate limits, then the handler; request metrics and the access log after it.

    One layer, not five: each layer of its own wrapped `send` and `receive` again and cost
    ~10% of a request at load. `direct` maps paths to bare ASGI handlers that POSTs reach
    without Starlette's router (the JSON predictions: the hot path)."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, known_routes: Iterable[str],
                 body: BodyLimit, auth: Auth, rate_limit: RateLimit,
                 trusted_proxies: Iterable[str] = (), access: AccessLog | None = None,
                 direct: dict[str, ASGIApp] | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.known = frozenset(known_routes)
        self.body = body
        self.auth = auth
        self.rate_limit = rate_limit
        self.trusted = networks(trusted_proxies)
        self.access = access or AccessLog()
        self.direct = dict(direct or {})
        self.new_id = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_api(scope):
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else self.new_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False
        extra = [(b"x-request-id", request_id.encode())]

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += extra
                headers += [h for h in _SECURITY_HEADERS if h[0] not in present]
                message["headers"] = headers
            await send(message)

        client = client_address(scope, self.trusted)
        self.metrics.in_flight.inc()
        try:
            limit = self.body.limit_of(scope)
            if self.auth.enabled:
                self.auth.check(scope, client)
            extra += self.rate_limit.check(scope, client)
            app = self.direct.get(scope["path"]) if scope["method"] == "POST" else None
            await (app or self.app)(scope, self.body.receive(receive, limit), send_wrapper)
        except Refusal as refusal:
            if not response_started:
                await send_error(send_wrapper, refusal.status, refusal.code, refusal.message,
                                 request_id=request_id, details=refusal.details,
                                 headers=refusal.headers, path=str(scope["path"]))
        except Exception:
            logger.exception("request %s failed", request_id)
            if not response_started:
                await send_error(send_wrapper, 500, "internal_error",
                                 "internal server error; quote the request id when reporting it",
                                 request_id=request_id, path=str(scope["path"]))
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            path = str(scope["path"])
            self.metrics.record(route_label(path, self.known), scope["method"], status,
                                elapsed, prediction=path.startswith(MODEL_PREFIXES))
            self.access.add(request_id, scope["method"], path, status, elapsed,
                            (scope.get("client") or ("", 0))[0])
