"""The microservice baseline: a front API that forwards each request over HTTP to a
model-server process (one per model), as a split deployment would."""

from __future__ import annotations

import json
import os

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def create_app(targets: dict[str, str] | None = None) -> Starlette:
    """Front app; `targets` maps model names (and "batch") to model-server base URLs
    (default: JSON in the HOP_TARGETS environment variable, which the
    harness sets when it starts this process)."""
    routes = targets if targets is not None else json.loads(os.environ["HOP_TARGETS"])
    clients = {name: httpx.AsyncClient(base_url=url, timeout=30.0,
                                       limits=httpx.Limits(max_connections=256,
                                                           max_keepalive_connections=256))
               for name, url in routes.items()}

    async def forward(request: Request) -> Response:
        name = request.path_params["name"]
        client = clients.get(name)
        if client is None:
            return Response(b'{"error": {"code": "not_found"}}', status_code=404,
                            media_type="application/json")
        upstream = await client.post(f"/api/predict/{name}", content=await request.body(),
                                     headers={"content-type":
                                              request.headers.get("content-type", "")})
        return Response(upstream.content, status_code=upstream.status_code,
                        media_type=upstream.headers.get("content-type"))

    async def ready(request: Request) -> Response:
        for client in clients.values():
            if (await client.get("/health/ready")).status_code != 200:
                return Response(b'{"status": "waiting"}', status_code=503)
        return Response(b'{"status": "ready"}', media_type="application/json")

    return Starlette(routes=[Route("/api/predict/{name}", forward, methods=["POST"]),
                             Route("/health/ready", ready)])
