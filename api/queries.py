"""Reading a request into a model's query: JSON bodies (decoded at C speed by msgspec, with
400/415/422 errors naming the field), multipart forms, base64 and URL images, and the
request's deadline. Handlers in `api.routes` call these and nothing else to parse."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from typing import Any, TypeVar

import msgspec
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope

from api import wire
from api.errors import ApiError
from api.middleware import header, uint
from api.service import Service
from ml.errors import InvalidInput

T = TypeVar("T")
TIMEOUT_HEADER = "x-request-timeout-ms"
# Bodies larger than this are decoded one at a time, each in a loop iteration of its own,
# so that several arriving together never stall the event loop back to back.
LARGE_BODY = 256 * 1024


def service_of(request: Request) -> Service:
    """The Service this app was built with."""
    service: Service = request.app.state.service
    return service


def media_type_of(scope: Scope) -> str:
    return (header(scope, b"content-type") or "").split(";")[0].strip().lower()


async def parse(request: Request, schema: type[T]) -> T:
    """The JSON body decoded as `schema`: 415, 400 or 422 otherwise."""
    return await parse_body(request.scope, await request.body(), schema, service_of(request))


async def parse_body(scope: Scope, body: bytes, schema: type[T], service: Service) -> T:
    """`body` (of the request `scope`) decoded as `schema`: 415, 400 or 422 otherwise."""
    media_type = media_type_of(scope)
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"send Content-Type: application/json (got {media_type or 'none'!r})")
    if len(body) <= LARGE_BODY:
        return decode(body, schema)
    async with service.large_bodies:
        await asyncio.sleep(0)  # whoever else is ready runs first
        return decode(body, schema)


async def read_body(receive: Receive) -> bytes:
    """The whole request body from an ASGI `receive`; ClientDisconnect if the client left."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(schema: type[T]) -> msgspec.json.Decoder[T]:
    found = _DECODERS.get(schema)
    if found is None:
        found = _DECODERS.setdefault(schema, msgspec.json.Decoder(schema))
    return found


def decode(body: bytes, schema: type[T]) -> T:
    """`body` decoded and validated as `schema`: 400 for malformed JSON, 422 naming the
    first problem's field otherwise (decoding stops there)."""
    try:
        decoded: T = _decoder(schema).decode(body)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") \
            from None
    return decoded


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED = re.compile(r"field `(?P<name>[^`]*)`")


def validation_error(message: str, prefix: str = "") -> ApiError:
    """422 for a body of the wrong shape, naming the field msgspec stopped at."""
    match = _AT.match(message)
    text, path = (match["message"], match["path"] or "") if match else (message, "")
    field = path.lstrip(".").replace("[", ".").replace("]", "")
    named = _NAMED.search(text)  # missing or unknown fields are named in the message
    if named and ("missing" in text or "unknown" in text):
        field = f"{field}.{named['name']}" if field else named["name"]
    kind = ("missing" if "missing required" in text else
            "extra_forbidden" if "unknown field" in text else
            "type_error" if text.startswith("Expected `") and ", got `" in text else
            "value_error")
    field = ".".join(p for p in (prefix, field) if p) or "(body)"
    return ApiError(422, "validation_error", f"{field}: {text}",
                    details={"errors": [{"field": field, "message": text, "type": kind}]})


def timeout_of(request: Request | Scope, service: Service) -> float:
    """The request's deadline: X-Request-Timeout-Ms if sent (1 ms up to the configured
    maximum), else the engine's default."""
    scope = request.scope if isinstance(request, Request) else request
    raw = header(scope, TIMEOUT_HEADER.encode())
    if raw is None:
        return service.engine.settings.request_timeout_s
    limit_ms = int(service.settings.max_request_timeout_s * 1e3)
    milliseconds = uint(raw)
    if milliseconds is None or not 1 <= milliseconds <= limit_ms:
        raise ApiError(400, "invalid_timeout",
                       f"{TIMEOUT_HEADER} must be an integer number of milliseconds from 1 to "
                       f"{limit_ms}", details={"header": TIMEOUT_HEADER})
    return milliseconds / 1e3


# -- reading a query ------------------------------------------------------------------------

async def read_query(request: Request, op: wire.Operation, service: Service) -> Any:
    """The model's query from a JSON body, or for models with files from multipart."""
    if op.takes_files and media_type_of(request.scope) == "multipart/form-data":
        return await query_from_form(request, op)
    body = await parse(request, op.request)
    if not op.takes_files:
        return body
    values = msgspec.structs.asdict(body)
    for name in op.files:
        encoded, url = values.pop(f"{name}_base64"), values.pop(f"{name}_url")
        if (encoded is None) == (url is None):
            raise validation_error(f"give exactly one of {name}_base64 or {name}_url")
        values[name] = (await service.fetcher.fetch(url, field=f"{name}_url")
                        if url is not None else decode_base64(encoded, f"{name}_base64"))
    return op.query(**values)


async def query_from_form(request: Request, op: wire.Operation) -> Any:
    """A multipart body: one file per bytes field of the query, its other fields as text."""
    try:
        form = await request.form(max_files=len(op.files), max_fields=16)
    except ClientDisconnect:
        raise
    except Exception as exc:  # noqa: BLE001 - the multipart parser raises many kinds
        raise ApiError(400, "bad_multipart", f"could not parse the multipart body: {exc}") \
            from None
    try:
        values: dict[str, Any] = {}
        for key in form:
            if key in op.files:
                continue
            value = form.get(key)
            if not isinstance(value, str):
                raise InvalidInput(f"{key} must be a text field, not a file", field=key)
            values[key] = value
        for name in op.files:
            files = [v for v in form.getlist(name) if isinstance(v, UploadFile)]
            if len(files) != 1:
                raise InvalidInput(f"send exactly one file in the {name!r} field", field=name)
            values[name] = await files[0].read()
    finally:
        await form.close()
    try:  # text fields are converted to the query's types ("5" -> 5; "²" is refused)
        return msgspec.convert(values, op.query, strict=False)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None


def decode_base64(text: str, field: str) -> bytes:
    """Bytes of a base64 string (data: URL prefix allowed); InvalidInput if it is not base64."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field} is not valid base64", field=field) from None
