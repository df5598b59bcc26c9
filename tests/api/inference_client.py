"""Helpers shared by the Open Inference Protocol tests: a model's example query as V2
tensors and parameters (derived from its signature, like the server's own mapping), and
a V2 answer compared with the spec route's answer for the same query."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import numpy as np
import pytest

from api import tensors, wire

NUMPY = {"BYTES": np.object_, "FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_}


def reachable(op: wire.Operation, query: Any) -> bool:
    """Whether V2 can express `query`: each field it sets is an input or a parameter."""
    sig = tensors.signature(op.query, op.result)
    default = msgspec.to_builtins(msgspec.convert(
        {t.name: msgspec.to_builtins(getattr(query, t.name)) for t in sig.inputs}, op.query))
    given = msgspec.to_builtins(query)
    settable = {t.name for t in sig.inputs} | {p.path[0] for p in sig.parameters}
    return all(given[k] == default[k] for k in given if k not in settable)


def columns(op: wire.Operation, queries: list[Any], *, binary: bool = True
            ) -> dict[str, np.ndarray]:
    """The queries' V2 input tensors, by name, as numpy arrays (files as base64 text when
    they go in JSON rather than as binary data)."""
    sig = tensors.signature(op.query, op.result)
    made = {}
    for spec in sig.inputs:
        values = [getattr(q, spec.name) for q in queries]
        if spec.kind == "scalar" and spec.datatype == "BYTES":
            values = [v.encode() for v in values]
        elif spec.kind == "file" and not binary:
            values = [base64.b64encode(v) for v in values]
        made[spec.name] = np.array(values, dtype=NUMPY[spec.datatype])
    return made


def parameters(op: wire.Operation, query: Any) -> dict[str, Any]:
    """The query's request parameters (every one, defaults included)."""
    sig = tensors.signature(op.query, op.result)
    out = {}
    for param in sig.parameters:
        value: Any = query
        for part in param.path:
            value = getattr(value, part)
        if value is not None:
            out[param.name] = value
    return out


ROUNDED = 6e-4  # half a unit in the 4th significant digit is at most 5e-4 of the value


def assert_same_answer(op: wire.Operation, outputs: dict[str, np.ndarray], row: int,
                       spec_answer: dict[str, Any]) -> None:
    """Row `row` of V2 outputs equals the spec route's answer: floats as FP32, and within
    the spec route's rounding to ML_RESPONSE_DIGITS (4) significant digits."""
    sig = tensors.signature(op.query, op.result)
    for spec in sig.outputs:
        expected = spec_answer.get(spec.name)
        if expected is None:
            assert spec.name not in outputs, spec.name
            continue
        got = outputs[spec.name][row]
        if spec.kind == "vector":
            assert list(got) == pytest.approx([expected[c] for c in spec.fields], rel=ROUNDED,
                                              abs=1e-6)
        elif spec.kind == "json":
            text = got.decode() if isinstance(got, bytes) else got
            assert _close(json.loads(text), expected), spec.name
        elif spec.datatype == "BYTES":
            assert (got.decode() if isinstance(got, bytes) else got) == expected, spec.name
        elif spec.datatype == "FP32":
            assert float(got) == pytest.approx(expected, rel=ROUNDED, abs=1e-6), spec.name
        else:
            assert got.item() == expected, spec.name


def _close(got: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(got, dict) and got.keys() == expected.keys() and all(
            _close(got[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(
            _close(g, e) for g, e in zip(got, expected, strict=True))
    if isinstance(expected, float):
        return bool(got == pytest.approx(expected, rel=ROUNDED, abs=1e-6))
    return bool(got == expected)
