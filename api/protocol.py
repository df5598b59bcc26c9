"""uvicorn's httptools protocol with bounds on what one connection may make the server hold.

uvicorn limits neither the size of a request head nor how long an unread response may sit
in the server's buffers. A client could hold a connection open by sending nothing, or its
headers a byte at a time (slowloris); send millions of tiny headers or one of 100 MB, which
the parser buffers whole; or ask for responses and never read them. Here:

- every request head must be complete within ML_HEADER_TIMEOUT_S of the connection opening
  or the previous response finishing (408);
- a head holds at most ML_MAX_HEADERS header lines (431) and ML_MAX_HEAD_BYTES in all
  (431), and its request target at most ML_MAX_URL_BYTES (414). The parser is never fed
  more than the head limit before the head ends, so nothing larger is ever buffered;
- a response the client stops reading for ML_WRITE_TIMEOUT_S is abandoned and the
  connection reset, which frees its buffers.

Refusals are JSON in the API's error shape, with `connection: close`. Slow bodies are timed
by the API's body middleware.

Serve with `uvicorn --http api.protocol:GuardedHttpToolsProtocol` (what `make run` does).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.config import ApiSettings
from api.encoding import encode
from api.schemas import ErrorDetail, ErrorResponse

logger = logging.getLogger("api.protocol")
REASONS = {400: b"Bad Request", 408: b"Request Timeout", 414: b"URI Too Long",
           431: b"Request Header Fields Too Large"}
LINGER_S = 1.0  # after a refusal, what the client still sends is read and dropped this long


@dataclass(frozen=True)
class Limits:
    """The per-connection bounds, read from the settings once per process."""

    header_timeout_s: float
    max_headers: int
    max_head_bytes: int
    max_url_bytes: int
    write_timeout_s: float

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Limits:
        return cls(settings.header_timeout_s, settings.max_headers, settings.max_head_bytes,
                   settings.max_url_bytes, settings.write_timeout_s)


_LIMITS: Limits | None = None


def limits() -> Limits:
    """This process's limits (ML_HEADER_TIMEOUT_S, ML_MAX_HEADERS, ...), read once."""
    global _LIMITS
    if _LIMITS is None:
        _LIMITS = Limits.from_settings(ApiSettings.from_env())
    return _LIMITS


def error_response(status: int, code: str, message: str, **details: Any) -> bytes:
    """A complete HTTP/1.1 response carrying the API's JSON error shape; closes."""
    body = encode(ErrorResponse(ErrorDetail(code, message, details)))
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % (status, REASONS[status], len(body))) + body


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a head that broke a limit."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with deadlines and size limits on request heads, and a deadline
    on responses the client does not read."""

    _head_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None
    _refusal: tuple[int, str, str, dict[str, Any]] | None = None
    _discarding = False
    _in_head = True
    _head_bytes = 0
    _header_count = 0
    _url_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._limits = limits()
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if not self._in_head:
            self._feed(data)
            return
        room = self._limits.max_head_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            self._feed(data)
            return
        # More than the head may still take: feed only what fits, so the parser never
        # buffers more than the limit; the rest follows only if the head ended in it.
        view = memoryview(data)
        while view and self._in_head and not self.transport.is_closing():
            room = self._limits.max_head_bytes - self._head_bytes
            if room <= 0:
                self._refuse(431, "request_header_fields_too_large",
                             f"the request head is larger than {self._limits.max_head_bytes} "
                             "bytes", limit=self._limits.max_head_bytes)
                return
            part, view = view[:room], view[room:]
            self._head_bytes += len(part)
            self._feed(part)
        if view and not self.transport.is_closing():
            self._feed(view)

    def _feed(self, data: bytes | memoryview) -> None:
        """uvicorn's data_received, with the refusals of this class in its error path."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self._refusal is not None:
                status, code, message, details = self._refusal
                self._refuse(status, code, message, **details)
            else:
                logger.info("invalid HTTP request from %s", self.client)
                self._refuse(400, "bad_request", "invalid HTTP request")

    # -- parser callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self._limits.max_url_bytes:
            self._stop(414, "uri_too_long", "the request target is longer than "
                       f"{self._limits.max_url_bytes} bytes", limit=self._limits.max_url_bytes)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            self._stop(431, "request_header_fields_too_large", "the request has more than "
                       f"{self._limits.max_headers} headers", limit=self._limits.max_headers)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        self._head_bytes = self._header_count = self._url_bytes = 0
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # uvicorn's keep-alive timer takes over while the connection idles

    # -- flow control: a client that does not read ----------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self._limits.write_timeout_s,
                                                     self._write_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        logger.info("client %s read nothing for %gs; connection reset", self.client,
                    self._limits.write_timeout_s)
        self.transport.abort()  # drops the unsent buffer; the response's send returns

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    # -- refusals ---------------------------------------------------------------------------
    def _stop(self, status: int, code: str, message: str, **details: Any) -> None:
        self._refusal = (status, code, message, details)
        raise _Refused(message)

    def _refuse(self, status: int, code: str, message: str, **details: Any) -> None:
        """Answer with a JSON error and close; just close if a response is under way.

        The close lingers: closing a socket with unread data makes the kernel send a reset,
        which can destroy the answer before the client reads it. So the write side is shut
        after the answer, and whatever the client still sends is dropped unread (never
        buffered) for LINGER_S before the connection closes."""
        self._disarm()
        if self.transport.is_closing() or self._discarding:
            return
        cycle: Any = self.cycle
        if cycle is not None and not cycle.response_complete:
            self.transport.close()
            return
        self.transport.write(error_response(status, code, message, **details))
        self._discarding = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self._limits.header_timeout_s,
                                                self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        cycle: Any = self.cycle
        if cycle is not None and not cycle.response_complete:
            return  # a request is being served; its own deadline applies
        timeout = self._limits.header_timeout_s
        self._refuse(408, "request_timeout",
                     f"the request head did not arrive within {timeout:g}s", timeout_s=timeout)
