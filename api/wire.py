"""The REST shapes of a model, derived from its query and result types.

Nothing here is per model. A model's query type is its JSON request body, with one rule
for binary fields, which JSON cannot carry: a `bytes` field `f` is sent as `f_base64` (the
file, base64-encoded) or `f_url` (an http(s) URL the server fetches, SSRF-safe), exactly
one of the two, or as a file named `f` in a multipart/form-data body whose other fields
are the query's. The response is the result type plus `latency_ms` and `model`. The
batch route takes `{"texts": [...], "model": ..., "options": {...}}` for any model whose
query has a `text` field and answers one result per text.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

import msgspec

from ml.contract import Model

URL_CHARS = 2048
BATCH_ROUTE = "/api/predict/batch"


def _bare(kind: Any) -> Any:
    """The type under Annotated[...] (and under `X | None`)."""
    if typing.get_origin(kind) is Annotated:
        return typing.get_args(kind)[0]
    return kind


def _meta(kind: Any) -> msgspec.Meta | None:
    if typing.get_origin(kind) is Annotated:
        return next((m for m in typing.get_args(kind)[1:] if isinstance(m, msgspec.Meta)),
                    None)
    return None


def _default(info: msgspec.structs.FieldInfo) -> Any:
    if info.default is not msgspec.NODEFAULT:
        return info.default
    if info.default_factory is not msgspec.NODEFAULT:
        return msgspec.field(default_factory=info.default_factory)
    return msgspec.NODEFAULT


@dataclass(frozen=True)
class Operation:
    """One model's REST surface."""

    name: str
    paths: tuple[str, ...]
    model: type[Model]
    query: type[msgspec.Struct]
    result: type[msgspec.Struct]
    request: type[msgspec.Struct]  # the JSON body (the query itself without bytes fields)
    files: tuple[str, ...]  # bytes fields: f_base64 / f_url in JSON, f in multipart
    response: type[msgspec.Struct]
    summary: str

    @property
    def takes_files(self) -> bool:
        return bool(self.files)

    def query_hints(self, settings: Any) -> dict[str, dict[str, Any]]:
        """JSON Schema keywords the model's settings add to its query's fields."""
        hints = getattr(self.model, "schema_hints", None)
        return hints(settings) if callable(hints) else {}

    def example_bodies(self, examples: list[Any]) -> list[dict[str, Any]]:
        """Request bodies of the model's example queries (a URL stands in for a file)."""
        bodies = []
        for example in examples:
            body = msgspec.to_builtins(example)
            for name in self.files:
                body.pop(name, None)
                body[f"{name}_url"] = "https://example.com/photo.jpg"
            bodies.append(body)
        return bodies


def operation(name: str, cls: type[Model], aliases: tuple[str, ...] = ()) -> Operation:
    """The REST surface of model class `cls` registered as `name`."""
    query, result = cls.Query, cls.Result
    files = tuple(f.name for f in msgspec.structs.fields(query) if _bare(f.type) is bytes)
    summary = ((query.__doc__ or "").strip().splitlines() or [f"Predict with {name}"])[0]
    return Operation(name, tuple(f"/api/predict/{n}" for n in (name, *aliases)), cls, query,
                     result, request_type(query), files, response_type(result), summary)


@cache
def request_type(query: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """The JSON body of `query`: itself, or with each bytes field `f` as `f_base64` and
    `f_url` (both optional in the schema, exactly one required, checked on decode)."""
    infos = msgspec.structs.fields(query)
    if not any(_bare(f.type) is bytes for f in infos):
        return query
    fields: list[tuple[Any, ...]] = []
    for info in infos:
        if _bare(info.type) is not bytes:
            default = _default(info)
            fields.append((info.name, info.type) if default is msgspec.NODEFAULT
                          else (info.name, info.type, default))
            continue
        meta = _meta(info.type)
        about = meta.description if meta and meta.description else info.name
        fields += [
            (f"{info.name}_base64", Annotated[str, msgspec.Meta(
                description=f"{about} The file, base64-encoded (a data: URL prefix is "
                            "allowed). Give this or the URL.")] | None, None),
            (f"{info.name}_url", Annotated[str, msgspec.Meta(
                max_length=URL_CHARS,
                description=f"{about} An http(s) URL the server fetches; private and "
                            "loopback addresses are refused. Give this or the base64 file."
            )] | None, None)]
    return msgspec.defstruct(f"{query.__name__}Body", fields, forbid_unknown_fields=True,
                             kw_only=True, module=__name__)


@cache
def response_type(result: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """The result plus `latency_ms` (model time: queue + compute) and `model` (version)."""
    fields: list[tuple[Any, ...]] = [
        ("latency_ms", Annotated[float, msgspec.Meta(
            description="Server-side model time: queue wait plus compute, in ms.")]),
        ("model", Annotated[str, msgspec.Meta(description="The model's version.")])]
    for info in msgspec.structs.fields(result):
        default = _default(info)
        fields.append((info.name, info.type) if default is msgspec.NODEFAULT
                      else (info.name, info.type, default))
    config = result.__struct_config__
    return msgspec.defstruct(f"{result.__name__}Response", fields, kw_only=True,
                             omit_defaults=config.omit_defaults, module=__name__)


@cache
def batch_response_type(result: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """One result per text, in order, with the batch's model time and the model."""
    return msgspec.defstruct(f"{result.__name__}Batch", [
        ("results", list[result]), ("count", int),  # type: ignore[valid-type]
        ("latency_ms", Annotated[float, msgspec.Meta(
            description="Model time of the whole batch, in ms.")]),
        ("model", str)], kw_only=True, module=__name__)


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Many texts for one model, one result each, in order."""

    texts: Annotated[list[str], msgspec.Meta(
        min_length=1, description="1 to ML_MAX_BATCH_TEXTS texts (default 2000).")]
    model: Annotated[str, msgspec.Meta(
        description="A model whose query has a text field.")] = "sentiment"
    options: Annotated[dict[str, Any], msgspec.Meta(
        description="The same for every text: the query's `options` field for a model "
                    "that has one (sentiment: {detailed}), else its fields other than "
                    "text.")] = {}


def has_options_field(query: type[msgspec.Struct]) -> bool:
    """Whether a batch's options are the query's `options` field (else its other fields)."""
    return any(f.name == "options" for f in msgspec.structs.fields(query))


def batch_queries(query: type[msgspec.Struct], body: BatchRequest) -> list[msgspec.Struct]:
    """The queries of a batch request (ValidationError if the options do not fit; its path
    is within the options when `has_options_field`, within the query otherwise)."""
    fields: dict[str, Any] = {"text": body.texts[0]}
    if body.options and has_options_field(query):
        fields["options"] = body.options
    elif body.options:
        if "text" in body.options:
            raise msgspec.ValidationError("the texts are the batch's own - at `$.text`")
        fields.update(body.options)
    template = msgspec.convert(fields, query)
    return [msgspec.structs.replace(template, text=text) for text in body.texts]


def takes_text(query: type[msgspec.Struct]) -> bool:
    """True if `query` has a `text` string field (so that the batch route can serve it)."""
    return any(f.name == "text" and _bare(f.type) is str
               for f in msgspec.structs.fields(query))


_encoder = msgspec.json.Encoder()


def encode_prediction(result: msgspec.Struct, latency_ms: float, model: str) -> bytes:
    """The response body: the result encoded by its own type, with the envelope in front
    (the same bytes as encoding `response_type(type(result))`, without building one)."""
    body = _encoder.encode(result)
    head = b'{"latency_ms":%s,"model":%s' % (_encoder.encode(latency_ms),
                                             _encoder.encode(model))
    return head + (b"}" if body == b"{}" else b"," + body[1:])


def json_body(op: Operation, query: msgspec.Struct) -> bytes:
    """The JSON request body of `query` (its files base64-encoded)."""
    body = msgspec.to_builtins(query)  # bytes become base64 strings
    for name in op.files:
        body[f"{name}_base64"] = body.pop(name)
    return msgspec.json.encode(body)
