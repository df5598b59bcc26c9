"""A "try it" page for any model, built from its contract: a form generated from the
query type's fields (defaults from the model's first example), the result rendered from
the result type's fields. Models without a page of their own (plugins) get this one."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import altair as alt
import msgspec
import pandas as pd
import streamlit as st

from ml.contract import query_of
from ml.errors import InvalidInput
from views.shared import info_card, latency_caption, look, model, registry, serve


def _bare(kind: Any) -> tuple[Any, msgspec.Meta | None, bool]:
    """(type, its Meta, optional?) of a field's annotation."""
    meta = None
    if typing.get_origin(kind) is Annotated:
        args = typing.get_args(kind)
        kind, meta = args[0], next((m for m in args[1:] if isinstance(m, msgspec.Meta)), None)
    optional = False
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(kind) if a is not type(None)]
        optional, kind = len(members) < len(typing.get_args(kind)), members[0]
        if typing.get_origin(kind) is Annotated:
            kind, meta = _bare(kind)[0], _bare(kind)[1] or meta
    return kind, meta, optional


def widgets(struct: type[msgspec.Struct], example: Any, key: str) -> dict[str, Any]:
    """One widget per field of `struct` (numbers, flags and choices three to a row; texts,
    files and nested structs full width); the values entered."""
    values: dict[str, Any] = {}
    slot = 0
    row: list[Any] = []
    for info in msgspec.structs.fields(struct):
        kind, meta, optional = _bare(info.type)
        label = info.name.replace("_", " ")
        help_text = meta.description if meta else None
        default = getattr(example, info.name, None) if example is not None else None
        if default is None and info.default is not msgspec.NODEFAULT:
            default = info.default
        widget_key = f"{key}.{info.name}"
        scalar = kind in (bool, int, float) or typing.get_origin(kind) is Literal
        if scalar:
            if slot % 3 == 0:
                row = st.columns(3)
            place, slot = row[slot % 3], slot + 1
        else:
            place, slot = st, 0
        if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            with st.container(border=True):
                st.caption(label)
                values[info.name] = widgets(kind, default, widget_key)
        elif kind is bytes:
            upload = place.file_uploader(label, help=help_text, key=widget_key)
            if upload is not None:
                values[info.name] = upload.getvalue()
        elif kind is bool:
            values[info.name] = place.checkbox(label, value=bool(default), help=help_text,
                                               key=widget_key)
        elif typing.get_origin(kind) is Literal:
            options = list(typing.get_args(kind))
            values[info.name] = place.selectbox(label, options, help=help_text,
                                                key=widget_key, index=options.index(default)
                                                if default in options else 0)
        elif kind in (int, float):
            low = meta.ge if meta and meta.ge is not None else None
            high = meta.le if meta and meta.le is not None else None
            start = default if isinstance(default, (int, float)) else (low or 0)
            values[info.name] = place.number_input(
                label, min_value=kind(low) if low is not None else None,
                max_value=kind(high) if high is not None else None, value=kind(start),
                step=1 if kind is int else None, help=help_text, key=widget_key)
        elif kind is str:
            entered = (place.text_area if info.name == "text" else place.text_input)(
                label, value=default or "", help=help_text, key=widget_key)
            if entered or not optional:
                values[info.name] = entered
        elif typing.get_origin(kind) in (tuple, list):
            entered = place.text_input(f"{label} (comma-separated)", value=", ".join(
                map(str, default or ())), help=help_text, key=widget_key)
            values[info.name] = [v.strip() for v in entered.split(",") if v.strip()]
    return values


def render(result: msgspec.Struct) -> None:
    """The result's fields: labels and numbers as metrics, class shares as a bar chart,
    the rest as JSON."""
    plain = msgspec.to_builtins(result)
    scalars = {k: v for k, v in plain.items() if isinstance(v, (str, int, float))
               and not isinstance(v, bool)}
    if scalars:
        for column, (name, value) in zip(st.columns(min(4, len(scalars))),
                                         list(scalars.items())[:4], strict=False):
            column.metric(name.replace("_", " "),
                          f"{value:.3f}" if isinstance(value, float) else str(value))
    for name, value in plain.items():
        if isinstance(value, dict) and value and all(isinstance(v, (int, float))
                                                     for v in value.values()):
            frame = pd.DataFrame({"class": list(value), "value": list(value.values())})
            st.markdown(f"**{name.replace('_', ' ')}**")
            st.altair_chart(alt.Chart(frame).mark_bar(color="#2563eb").encode(
                x=alt.X("value:Q", scale=alt.Scale(domain=[0, max(1.0, frame.value.max())])),
                y=alt.Y("class:N", sort="-x", title=None)), width="stretch")
    with st.expander("The whole answer (JSON)"):
        st.json(plain)


def try_it(name: str) -> None:
    """The page of model `name`."""
    found = model(name)
    status = registry().status(name)
    st.title(look(name)[0])
    if found is None:
        st.stop()
    card = found.info()
    st.markdown(card.get("task", ""))
    if status.origin != "built-in":
        st.caption(f"From {status.origin}, served with the same engine, API and metrics as "
                   "the built-in models.")
    examples = found.examples()
    with st.form(f"query-{name}"):
        values = widgets(type(found).Query, examples[0] if examples else None, name)
        submitted = st.form_submit_button("Predict", type="primary")
    if submitted:
        try:
            query = query_of(type(found), values, strict=False)
        except InvalidInput as exc:
            st.warning(str(exc), icon=":material/warning:")
        else:
            served, ms = serve(name, query)
            if served is not None:
                latency_caption(ms, cached=served.cached)
                render(served.result)
    info_card(card)


def page(name: str) -> Callable[[], None]:
    """A page function for model `name` (for st.Page)."""
    def show() -> None:
        try_it(name)
    show.__name__ = f"model_{name.replace('-', '_')}"
    return show
