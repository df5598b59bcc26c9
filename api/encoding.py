"""JSON responses: schema'd ones encoded through their msgspec Struct, documents with orjson."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import numpy as np
import orjson
from starlette.responses import Response

T = TypeVar("T", bound=msgspec.Struct)


class JSONResponse(Response):
    """application/json rendered with orjson (numpy floats and dataclasses included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def json_response(content: Any, *, status: int = 200,
                  headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON response for a free-form document (the OpenAPI spec)."""
    return JSONResponse(content, status_code=status, headers=headers)


def _builtin(value: Any) -> Any:
    """numpy scalars and arrays, which model figures may hold, as plain JSON values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)  # an error detail of another type: its text, never a crash


_encoder = msgspec.json.Encoder(enc_hook=_builtin)


def encode(value: msgspec.Struct) -> bytes:
    """`value` as JSON bytes."""
    return _encoder.encode(value)


def schema_response(schema: type[T], content: T | dict[str, Any], *, status: int = 200,
                    headers: dict[str, str] | None = None) -> Response:
    """`content` encoded through `schema`, the Struct that also documents it in OpenAPI:
    a dict is converted first, so a field the schema lacks is never sent."""
    value = content if isinstance(content, schema) else msgspec.convert(content, schema)
    return Response(_encoder.encode(value), status_code=status, headers=headers,
                    media_type="application/json")
