"""Fast JSON responses (orjson)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSONResponse(Response):
    """application/json rendered with orjson (numpy floats and dataclasses included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def json_response(content: Any, *, status: int = 200,
                  headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON response."""
    return JSONResponse(content, status_code=status, headers=headers)
