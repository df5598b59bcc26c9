"""`/docs`: the interactive API documentation, Swagger UI served from the installed
`swagger-ui-bundle-v2` package, so the page works offline and loads nothing from elsewhere.

It reads `/openapi.json`: every operation grouped by tag (the table of contents), its
request examples (taken from the models' own examples), its response schemas, and
"Try it out" against this server, with the API key field when keys are configured.
Only the few files the page needs are served, under `/docs/`.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")
# Swagger UI styles elements inline and shows images as data URLs; nothing else is allowed
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Real-time ML predictions: API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head><body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body></html>
"""
# Not inline: the page's policy allows scripts from this server only.
INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  docExpansion: "list", defaultModelsExpandDepth: 0, displayRequestDuration: true,
  tryItOutEnabled: true, validatorUrl: null
});
"""


def assets_dir() -> Path:
    """Where the installed package keeps Swagger UI's files."""
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


async def page(request: Request) -> Response:
    """GET /docs."""
    return HTMLResponse(PAGE, headers={"content-security-policy": POLICY})


async def asset(request: Request) -> Response:
    """GET /docs/{name}: the initializer, or one of Swagger UI's own files."""
    name = request.path_params["name"]
    if name == "init.js":
        body, media = INIT.encode(), "text/javascript"
    elif name in ASSETS:
        body = (assets_dir() / name).read_bytes()
        media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    else:
        raise HTTPException(404)
    return Response(body, media_type=media, headers={
        "cache-control": "public, max-age=86400", "content-security-policy": POLICY})
