"""Floats in JSON answers, rounded for the people who read them.

A model answers at full float precision (0.9726619523305536); a person reading a response,
and most programs, want 0.9727. `rounder(Result, digits)` derives from a result type, once,
a function that rounds every float it holds (nested structs, lists, dicts and optional
fields included) to `digits` significant digits, keeping every digit of the integer part:
0.97266 -> 0.9727, 1.7483e-05 -> 1.748e-05, 123456.78 -> 123457.0. Nothing here is per
model; ML_RESPONSE_DIGITS sets the digits, 0 answers full precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any

import msgspec
import msgspec.inspect as mi

Round = Callable[[Any], Any]


def significant(value: float, digits: int) -> float:
    """`value` to `digits` significant digits, never fewer than its integer digits."""
    limit = 10.0**digits
    if -limit < value < limit:  # then the g format keeps every integer digit
        return float(f"{value:.{digits}g}")
    return value if not math.isfinite(value) else round(value, 0)


@cache
def rounder(kind: type[msgspec.Struct], digits: int) -> Round | None:
    """A function that rounds the floats of a `kind` value (None: it holds none, or
    `digits` is 0)."""
    if digits <= 0:
        return None
    return _of(mi.type_info(kind), digits, frozenset())


def _of(info: mi.Type, digits: int, within: frozenset[type]) -> Round | None:
    """`within`: the struct types being derived (a recursive type stops there)."""
    if isinstance(info, mi.Metadata):
        return _of(info.type, digits, within)
    if isinstance(info, mi.FloatType):
        return lambda value: significant(value, digits)
    if isinstance(info, mi.UnionType):
        return _union(info, digits, within)
    if isinstance(info, mi.ListType | mi.VarTupleType | mi.FrozenSetType | mi.SetType):
        item = _of(info.item_type, digits, within)
        if item is None:
            return None
        return lambda values: [item(v) for v in values]
    if isinstance(info, mi.DictType):
        value = _of(info.value_type, digits, within)
        if value is None:
            return None
        return lambda items: {k: value(v) for k, v in items.items()}
    if isinstance(info, mi.StructType) and info.cls not in within:
        return _struct(info, digits, within | {info.cls})
    return None


def _union(info: mi.UnionType, digits: int, within: frozenset[type]) -> Round | None:
    """Optional floats and structs: round what is there, pass None (and the rest) through."""
    parts = [(kind, r) for kind in info.types if (r := _of(kind, digits, within)) is not None]
    if not parts:
        return None
    if len(parts) == 1 and isinstance(parts[0][0], mi.FloatType):
        only = parts[0][1]
        return lambda value: only(value) if isinstance(value, float) else value
    if len(parts) == 1 and isinstance(parts[0][0], mi.StructType):
        cls, only = parts[0][0].cls, parts[0][1]
        return lambda value: only(value) if isinstance(value, cls) else value
    return None  # an ambiguous union is left as the model answered it


def _struct(info: mi.StructType, digits: int, within: frozenset[type]) -> Round | None:
    fields = [(f.name, r) for f in info.fields if (r := _of(f.type, digits, within)) is not None]
    if not fields:
        return None

    replace = msgspec.structs.replace

    def round_struct(value: msgspec.Struct) -> msgspec.Struct:
        changes = {}
        for name, round_field in fields:
            field = getattr(value, name)
            if field is not None:  # an optional field left out costs nothing
                changes[name] = round_field(field)
        return replace(value, **changes)
    return round_struct
