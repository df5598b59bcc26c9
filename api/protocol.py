"""uvicorn's httptools protocol with a deadline on request heads.

uvicorn closes idle keep-alive connections, but a client that opens a connection and sends
nothing, or sends its headers one byte at a time (slowloris), holds a connection forever.
Here every request head must be complete within ML_HEADER_TIMEOUT_S of the connection
opening or the previous response finishing; otherwise the client gets a 408 and the
connection is closed. Slow bodies are timed by the API's body middleware.

Serve with `uvicorn --http api.protocol:GuardedHttpToolsProtocol` (what `make run` does).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ml.config import Settings

_TIMEOUT: float | None = None


def header_timeout() -> float:
    """ML_HEADER_TIMEOUT_S, read once per process."""
    global _TIMEOUT
    if _TIMEOUT is None:
        _TIMEOUT = Settings.from_env().header_timeout_s
    return _TIMEOUT


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose request heads must arrive within a deadline."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # uvicorn's keep-alive timer takes over while the connection idles

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(header_timeout(), self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        cycle: Any = self.cycle
        if cycle is not None and not cycle.response_complete:
            return  # a request is being served; its own deadline applies
        body = json.dumps({"error": {
            "code": "request_timeout", "details": {"timeout_s": header_timeout()},
            "message": f"the request head did not arrive within {header_timeout():g}s"}}
        ).encode()
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)
        self.transport.close()
