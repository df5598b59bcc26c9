"""HTTP errors: one JSON shape, one place that maps ml errors to status codes."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.encoding import schema_response
from api.schemas import ErrorDetail, ErrorResponse
from ml.errors import (
    ConfigError,
    DeadlineExceeded,
    InvalidInput,
    MLError,
    ModelUnavailable,
    Overloaded,
    UnknownModel,
)

logger = logging.getLogger("api")


class UrlNotAllowed(InvalidInput):
    """Raised when a URL input points somewhere the service must not reach (SSRF guard)."""

    code = "url_not_allowed"


class UrlFetchFailed(InvalidInput):
    """Raised when a URL input could not be fetched: timeout, bad status, too big."""

    code = "url_fetch_failed"

# ml error -> HTTP status. Subclasses before their bases: the first match wins.
STATUS: tuple[tuple[type[MLError], int], ...] = (
    (UrlNotAllowed, 422),
    (UrlFetchFailed, 422),
    (InvalidInput, 422),
    (UnknownModel, 404),
    (Overloaded, 503),
    (ModelUnavailable, 503),
    (DeadlineExceeded, 504),
    (ConfigError, 500),
    (MLError, 500),
)


class ApiError(Exception):
    """An HTTP-level refusal (bad JSON, wrong media type, auth, limits) with its status."""

    def __init__(self, status: int, code: str, message: str, *,
                 details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


MAX_MESSAGE_CHARS = 300
MAX_DETAIL_ITEMS = 10


def bounded(value: Any, chars: int = MAX_MESSAGE_CHARS) -> Any:
    """`value` cut down for an error body: strings to `chars`, lists to their first items
    (then a count of the rest), so no input can make an error large."""
    if isinstance(value, str):
        return value if len(value) <= chars else f"{value[:chars]}... ({len(value)} chars)"
    if isinstance(value, (list, tuple)):
        items = [bounded(v, chars) for v in value[:MAX_DETAIL_ITEMS]]
        if len(value) > MAX_DETAIL_ITEMS:
            items.append(f"... and {len(value) - MAX_DETAIL_ITEMS} more")
        return items
    if isinstance(value, dict):
        return {str(k)[:64]: bounded(v, chars)
                for k, v in list(value.items())[:MAX_DETAIL_ITEMS * 2]}
    return value


def error_body(code: str, message: str, details: dict[str, Any] | None,
               request_id: str | None) -> ErrorResponse:
    """The one error shape every endpoint returns; its size is bounded whatever the input."""
    return ErrorResponse(ErrorDetail(code, bounded(message), bounded(details or {}),
                                     request_id or None))


def inference_error_body(message: str) -> bytes:
    """The Open Inference Protocol's error body (its /v2 routes): `{"error": message}`,
    bounded whatever the message."""
    return msgspec.json.encode({"error": bounded(message)})


def error_response(status: int, code: str, message: str, *,
                   details: dict[str, Any] | None = None, request_id: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """A JSON error response."""
    return schema_response(ErrorResponse, error_body(code, message, details, request_id),
                           status=status, headers=headers)


def status_of(exc: MLError) -> int:
    """HTTP status for an ml error."""
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def request_id_of(request: Request) -> str | None:
    """The id the request-context middleware gave this request."""
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


async def handle_ml_error(request: Request, exc: Exception) -> Response:
    """MLError -> its status and code."""
    assert isinstance(exc, MLError)
    status = status_of(exc)
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    if status >= 500 and not isinstance(exc, Overloaded | ModelUnavailable | DeadlineExceeded):
        logger.error("ml error %s: %s", exc.code, exc.message)
    return error_response(status, exc.code, exc.message, details=exc.details,
                          request_id=request_id_of(request), headers=headers)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    """ApiError -> its status and code."""
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, details=exc.details,
                          request_id=request_id_of(request),
                          headers=dict(exc.headers) if exc.headers else None)


HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's routing errors (404, 405) in the JSON shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no endpoint at {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "http_error"),
                          message, request_id=request_id_of(request),
                          headers=dict(exc.headers) if exc.headers else None)


CLIENT_CLOSED = 499  # nginx's status for a client that went away before its answer


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away mid-request: nobody to answer, nothing broken. Recorded as 499
    in the access log and metrics, never as a server error."""
    logger.info("client went away during %s %s (request %s)", request.method,
                request.url.path, request_id_of(request))
    return error_response(CLIENT_CLOSED, "client_closed_request",
                          "the client closed the connection before the request was read",
                          request_id=request_id_of(request))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """A bug: log it with the request id, tell the client only the id."""
    request_id = request_id_of(request)
    logger.exception("unhandled error in %s %s (request %s)", request.method,
                     request.url.path, request_id)
    return error_response(500, "internal_error",
                          "internal server error; quote the request id when reporting it",
                          request_id=request_id)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    MLError: handle_ml_error,
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    ClientDisconnect: handle_client_disconnect,
    Exception: handle_unexpected,
}


async def answer_error(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Answer `exc` raised in a bare ASGI handler exactly as the app's exception handlers
    answer it in a Starlette route (the handler of its nearest class)."""
    handler = next(EXCEPTION_HANDLERS[kind] for kind in type(exc).__mro__
                   if kind in EXCEPTION_HANDLERS)
    response = await handler(Request(scope, receive), exc)
    await response(scope, receive, send)
