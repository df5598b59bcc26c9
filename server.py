"""One process, one port: the Streamlit UI at / and the REST API at /api, /health, /metrics.

`make run` serves it with `uvicorn server:app`; `streamlit run server.py` works too (what
Streamlit Community Cloud runs) but its listening socket lacks TCP_NODELAY, which adds ~40 ms
to every keep-alive API request.
The UI pages and the API share the process-wide model registry: one copy of each model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import streamlit as st
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api.app import create_app, serving
from api.config import ApiSettings
from api.middleware import is_api
from api.ratelimit import default_buckets
from api.service import Service
from api.ui import UiGuard
from benchmarks import live
from ml.engine import default_engine

# One registry, one engine (batchers, caches) and one set of rate-limit buckets, shared by
# the pages and the API. The benchmarks page's own measurement traffic is not rate-limited:
# it carries a per-run secret that only this process knows, accepted while that run lasts.
settings = ApiSettings.from_env()
service = Service(settings, default_engine(),
                  rate_limits=default_buckets(settings.rate_limit_per_second,
                                              settings.rate_limit_burst),
                  rate_limit_exempt=live.measuring)
api = create_app(service=service)

# The API app answers its own paths (with its own middleware, errors and 404/405s), mounted
# under st.App's routes as well so that Streamlit's catch-all never serves HTML for them.
api_routes = [Route(path, api) for path in (
    "/api/{path:path}", "/health", "/health/{path:path}", "/metrics", "/metrics/{path:path}",
    "/openapi.json", "/docs", "/docs/{path:path}", "/v2", "/v2/{path:path}")]


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Warm the models in the background at start-up; stop being ready on shutdown."""
    async with serving(service):
        yield


class ApiFirst:
    """API requests go straight to the API app; everything else (pages, websockets,
    lifespan) to st.App. This keeps Streamlit's session, path-security and gzip middleware,
    which API requests do not need, off the API's hot path (measured: ~25% of its CPU)."""

    def __init__(self, api: ASGIApp, ui: ASGIApp) -> None:
        self.api = api
        self.ui = ui

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_api(scope):
            await self.api(scope, receive, send)
        else:
            await self.ui(scope, receive, send)


# `streamlit run server.py` finds the st.App assignment to `app` by reading this file, then
# imports `server:app`: the ApiFirst front below, which `uvicorn server:app` serves too.
app: ASGIApp = st.App("app.py", routes=api_routes, lifespan=lifespan)
app = ApiFirst(api, UiGuard(
    app, max_sessions=settings.ui_max_sessions,
    max_sessions_per_client=settings.ui_max_sessions_per_client,
    idle_timeout_s=settings.ui_idle_timeout_s,
    upload_session_bytes=settings.ui_upload_session_bytes,
    upload_total_bytes=settings.ui_upload_total_bytes,
    frame_ancestors=settings.ui_frame_ancestors, api_keys=settings.api_keys,
    trusted_proxies=settings.trusted_proxies, access=service.access,
    access_ui=settings.access_log_ui))
