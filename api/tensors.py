"""A model's Open Inference Protocol (KServe V2) signature, derived from its query and
result types: the one place tensors map onto queries and results. Nothing here is per model.

Inputs are the query's required fields, one tensor each, with a batch dimension (shape
[-1]): a text or a file is BYTES (in JSON a file is base64; the binary extension carries it
raw), an int INT64, a float FP32, a bool BOOL; any other required field is BYTES holding
the value as JSON. The query's fields with defaults are request `parameters`, by their
leaf name (a nested struct's fields flattened: sentiment's `options.detailed` is
`detailed`), scalars only. Outputs are the result's fields: a scalar is one element per
item; a struct of floats (class probabilities) is FP32 [N, fields]; anything else is BYTES
holding the value as JSON. An output whose value is missing (None) for an item is left out.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

import msgspec

from ml.errors import InvalidInput

# V2 datatype -> (struct format of one element in the binary extension, JSON check)
NUMERIC = {"BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B",
           "UINT16": "H", "UINT32": "I", "UINT64": "Q", "FP16": "e", "FP32": "f",
           "FP64": "d"}
DATATYPES = (*NUMERIC, "BYTES")
_SCALARS: dict[Any, str] = {str: "BYTES", bytes: "BYTES", bool: "BOOL", int: "INT64",
                            float: "FP32"}
_PARAMETER_KINDS = {str: "string", bool: "bool", int: "int64", float: "double"}


def _bare(kind: Any) -> Any:
    """The type under Annotated[...] and `X | None`; Literal[str, ...] as str."""
    while True:
        origin = typing.get_origin(kind)
        if origin is Annotated:
            kind = typing.get_args(kind)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            if len(args) != 1:
                return kind
            kind = args[0]
        elif origin is Literal:
            values = typing.get_args(kind)
            return type(values[0]) if len({type(v) for v in values}) == 1 else kind
        else:
            return kind


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)


@dataclass(frozen=True)
class Tensor:
    """One input or output: its name, V2 datatype and shape (-1: any size), how its
    elements are read from or written to the query or result (`kind`), and which fields."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    kind: Literal["scalar", "file", "json", "vector"]
    fields: tuple[str, ...] = ()  # a vector's columns

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Parameter:
    """A query field with a default, set for the whole request: its name, the V2 kind of
    value it takes and where it goes in the query."""

    name: str
    kind: str
    path: tuple[str, ...]


@dataclass(frozen=True)
class Signature:
    """A model's V2 inputs, parameters and outputs."""

    inputs: tuple[Tensor, ...]
    parameters: tuple[Parameter, ...]
    outputs: tuple[Tensor, ...]

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)


@cache
def signature(query: type[msgspec.Struct], result: type[msgspec.Struct]) -> Signature:
    """The V2 signature of a model with these query and result types."""
    inputs: list[Tensor] = []
    candidates: list[tuple[str, tuple[str, ...], Any]] = []
    for info in msgspec.structs.fields(query):
        kind = _bare(info.type)
        if info.required:
            datatype = _SCALARS.get(kind, "BYTES")
            shape_kind = ("file" if kind is bytes else
                          "scalar" if kind in _SCALARS else "json")
            inputs.append(Tensor(info.name, datatype, (-1,), shape_kind))  # type: ignore[arg-type]
        elif _is_struct(kind):
            candidates += [(sub.name, (info.name, sub.name), _bare(sub.type))
                           for sub in msgspec.structs.fields(kind)]
        else:
            candidates.append((info.name, (info.name,), kind))
    leaf_names = [name for name, _, _ in candidates]
    parameters = tuple(
        Parameter(name if leaf_names.count(name) == 1 else ".".join(path),
                  _PARAMETER_KINDS[kind], path)
        for name, path, kind in candidates if kind in _PARAMETER_KINDS)
    outputs = []
    for info in msgspec.structs.fields(result):
        kind = _bare(info.type)
        if kind in _SCALARS and kind is not bytes:
            outputs.append(Tensor(info.name, _SCALARS[kind], (-1,), "scalar"))
        elif _is_struct(kind) and all(_bare(f.type) is float
                                      for f in msgspec.structs.fields(kind)):
            columns = tuple(f.name for f in msgspec.structs.fields(kind))
            outputs.append(Tensor(info.name, "FP32", (-1, len(columns)), "vector", columns))
        else:
            outputs.append(Tensor(info.name, "BYTES", (-1,), "json"))
    return Signature(tuple(inputs), parameters, tuple(outputs))


class TensorError(Exception):
    """A request that does not fit the protocol or the model's signature (400)."""


# -- requests ---------------------------------------------------------------------------------

class RequestTensor(msgspec.Struct):
    """One input tensor of an inference request (`data` may be nested, row-major)."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = {}
    data: Any = None


class RequestedOutput(msgspec.Struct):
    """An output the client asks for, and whether it wants it as binary data."""

    name: str
    parameters: dict[str, Any] = {}


class InferenceRequest(msgspec.Struct):
    """An inference request: inputs, optional id, parameters and outputs wanted."""

    inputs: list[RequestTensor]
    id: str | None = None
    parameters: dict[str, Any] = {}
    outputs: list[RequestedOutput] | None = None


def _flat(data: Any, depth: int = 0) -> list[Any]:
    """Nested lists flattened in row-major order."""
    if not isinstance(data, list):
        return [data]
    if depth > 8:
        raise TensorError("tensor data is nested deeper than 8 levels")
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    for value in data:
        out += _flat(value, depth + 1)
    return out


def _json_element_ok(datatype: str, value: Any) -> bool:
    if datatype == "BYTES":
        return isinstance(value, str)
    if datatype == "BOOL":
        return isinstance(value, bool)
    if datatype.startswith(("INT", "UINT")):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _from_binary(datatype: str, raw: bytes, count: int, name: str) -> list[Any]:
    if datatype == "BYTES":
        values, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise TensorError(f"input '{name}': binary BYTES data ends inside a length")
            (size,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + size > len(raw):
                raise TensorError(f"input '{name}': binary BYTES element overruns the data")
            values.append(raw[offset:offset + size])
            offset += size
    else:
        width = struct.calcsize("<" + NUMERIC[datatype])
        if len(raw) != count * width:
            raise TensorError(f"input '{name}': {len(raw)} bytes of binary data do not hold "
                              f"{count} {datatype} elements")
        values = list(struct.unpack(f"<{count}{NUMERIC[datatype]}", raw))
    if len(values) != count:
        raise TensorError(f"input '{name}': data holds {len(values)} elements; shape "
                          f"needs {count}")
    return values


def elements(spec: Tensor, given: RequestTensor, raw: bytes | None) -> list[Any]:
    """The query field values of one input tensor (`raw`: its binary data, if sent so)."""
    name = spec.name
    if given.datatype != spec.datatype:
        raise TensorError(f"input '{name}' has datatype {given.datatype}; the model takes "
                          f"{spec.datatype}")
    if len(given.shape) != len(spec.shape) or any(d < 0 for d in given.shape):
        raise TensorError(f"input '{name}' has shape {given.shape}; the model takes "
                          f"{list(spec.shape)} (-1: any size)")
    count = math.prod(given.shape)
    if raw is not None:
        values = _from_binary(spec.datatype, raw, count, name)
    else:
        if given.data is None:
            raise TensorError(f"input '{name}' has no data")
        values = _flat(given.data)
        if len(values) != count:
            raise TensorError(f"input '{name}': data holds {len(values)} elements; shape "
                              f"{given.shape} needs {count}")
        if not all(_json_element_ok(spec.datatype, v) for v in values):
            bad = next(v for v in values if not _json_element_ok(spec.datatype, v))
            raise TensorError(f"input '{name}': {type(bad).__name__} data in a "
                              f"{spec.datatype} tensor")
    if spec.kind == "file":
        return [v if isinstance(v, bytes) else _base64(v, name) for v in values]
    if spec.kind == "json":
        try:
            return [msgspec.json.decode(v) for v in values]
        except msgspec.DecodeError as exc:
            raise TensorError(f"input '{name}' holds JSON values: {exc}") from None
    if spec.datatype == "BYTES":
        try:
            return [v.decode() if isinstance(v, bytes) else v for v in values]
        except UnicodeDecodeError:
            raise TensorError(f"input '{name}' is not UTF-8 text") from None
    return values


def _base64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TensorError(f"input '{name}': a file in JSON data must be base64") from None


def queries(query: type[msgspec.Struct], sig: Signature, columns: dict[str, list[Any]],
            parameters: dict[str, Any]) -> list[Any]:
    """One query per row of the input columns, with the request's parameters set in each:
    InvalidInput naming the parameter or input that does not fit."""
    template: dict[str, Any] = {}
    for name, value in parameters.items():
        param = sig.parameter(name)
        if param is None:
            raise TensorError(f"unknown parameter '{name}' (the model takes: "
                              f"{', '.join(p.name for p in sig.parameters) or 'none'})")
        target = template
        for part in param.path[:-1]:
            target = target.setdefault(part, {})
        target[param.path[-1]] = value
    rows = len(next(iter(columns.values())))
    made = []
    for row in range(rows):
        fields = dict(template)
        for name, values in columns.items():
            fields[name] = values[row]
        try:
            made.append(msgspec.convert(fields, query))
        except msgspec.ValidationError as exc:
            raise InvalidInput(_where(str(exc), sig, row, rows)) from None
    return made


def _where(message: str, sig: Signature, row: int, rows: int) -> str:
    text, _, path = message.partition(" - at `$.")
    path = path.rstrip("`").split("[")[0]
    inputs = {t.name for t in sig.inputs}
    head = path.split(".")[0]
    if head in inputs:
        return f"input '{head}'" + (f"[{row}]" if rows > 1 else "") + f": {text}"
    param = next((p for p in sig.parameters if ".".join(p.path) == path), None)
    return f"parameter '{param.name if param else path or '(query)'}': {text}"


# -- responses --------------------------------------------------------------------------------

def output_values(spec: Tensor, results: Sequence[Any]) -> list[Any] | None:
    """The output's elements over `results`, row-major (None: missing for some result)."""
    values = [getattr(r, spec.name) for r in results]
    if any(v is None for v in values):
        return None
    if spec.kind == "vector":
        return [float(getattr(v, column)) for v in values for column in spec.fields]
    if spec.kind == "json":
        return [msgspec.json.encode(v).decode() for v in values]
    return values


def to_binary(datatype: str, values: list[Any]) -> bytes:
    """Elements in the binary tensor data extension's layout."""
    if datatype == "BYTES":
        parts = []
        for value in values:
            data = value if isinstance(value, bytes) else str(value).encode()
            parts += [struct.pack("<I", len(data)), data]
        return b"".join(parts)
    return struct.pack(f"<{len(values)}{NUMERIC[datatype]}", *values)
