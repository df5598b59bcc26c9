"""The HTTP floor: the least a Python server on this machine can do per request.

A bare ASGI app under the same uvicorn flags as the product (httptools, uvloop, the guarded
protocol, no access log) that reads the body, parses the JSON and answers a constant JSON.
Every HTTP path in the harness is reported as a ratio to it, measured in the same run.
"""

from __future__ import annotations

from typing import Any

import orjson

ANSWER = b'{"sentiment":"positive","confidence":0.9,"score":0.8,"latency_ms":0.0,"model":"floor"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the whole body, parse it, answer the constant."""
    if scope["type"] != "http":  # lifespan: nothing to set up
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if body:
        orjson.loads(body)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
