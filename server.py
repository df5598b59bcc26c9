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

from api.app import create_app, serving
from api.service import Service
from ml.config import Settings
from ml.registry import default_registry

service = Service(Settings.from_env(), default_registry())
api = create_app(service=service)

# The API app answers its own paths (with its own middleware, errors and 404/405s), mounted
# under st.App's routes so that Streamlit's catch-all never serves HTML for an API path.
api_routes = [Route(path, api) for path in (
    "/api/{path:path}", "/health", "/health/{path:path}", "/metrics", "/metrics/{path:path}",
    "/openapi.json", "/docs")]


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Warm the models in the background at start-up; stop being ready on shutdown."""
    async with serving(service):
        yield


app = st.App("app.py", routes=api_routes, lifespan=lifespan)
