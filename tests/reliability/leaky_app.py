"""`server:app` that keeps LEAK_BYTES_PER_REQUEST bytes of every HTTP request alive: a leak
injected on purpose, for tests/reliability/test_leak_check.py."""

from __future__ import annotations

import os

from starlette.types import Receive, Scope, Send

from server import app as served

LEAK_BYTES = int(os.environ.get("LEAK_BYTES_PER_REQUEST", "0"))
held: list[bytes] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The served app, leaking LEAK_BYTES a request."""
    if scope["type"] == "http" and LEAK_BYTES:
        # filled, not zeroed: calloc'd zero pages are never touched and never count in RSS
        held.append(b"\xa5" * LEAK_BYTES)
    await served(scope, receive, send)
