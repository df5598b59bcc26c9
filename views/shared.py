"""What every page uses: the process-wide registry and engine the REST API shares, so a
page's prediction joins the API's batches, queue limits and cache."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from ml.engine import Engine, default_engine
from ml.errors import MLError, ModelUnavailable
from ml.registry import Model, Registry, default_registry

T = TypeVar("T")


@st.cache_resource(show_spinner=False)
def registry() -> Registry:
    """The registry of this process (the same object the REST API serves from)."""
    return default_registry()


@st.cache_resource(show_spinner=False)
def engine() -> Engine:
    """The engine of this process (the same batchers and caches the REST API uses)."""
    return default_engine()


def serve(name: str, query: Any) -> tuple[Any, float]:
    """One prediction through the engine; ml errors become messages. Returns (result or
    None, milliseconds)."""
    return timed(lambda: engine().predict(name, query).result)


def model(name: str) -> Model | None:
    """Model `name`, loading it with a spinner the first time; None (and an error box) if
    it cannot load, so the rest of the app keeps working."""
    reg = registry()
    try:
        if reg.status(name).state != "ready":
            with st.spinner(f"Loading the {name} model (first use trains or loads it)..."):
                return reg.get(name)
        return reg.get(name)
    except ModelUnavailable as exc:
        st.error(f"The {name} model is unavailable: {exc.details.get('reason', exc.message)}",
                 icon=":material/error:")
        return None


def timed(call: Callable[[], T]) -> tuple[T | None, float]:
    """Run a model call; show ml errors as messages. Returns (result or None, ms)."""
    started = time.perf_counter()
    try:
        result = call()
    except MLError as exc:
        st.warning(exc.message, icon=":material/warning:")
        return None, 0.0
    return result, (time.perf_counter() - started) * 1e3


def latency_caption(ms: float) -> None:
    """The in-process latency, the point of the whole demo."""
    st.caption(f":material/bolt: {ms:.2f} ms in-process")


def info_card(info: dict[str, Any]) -> None:
    """A model card in an expander."""
    with st.expander("Model card"):
        st.json(info, expanded=1)


MAX_CSV_ROWS = 5000


def read_text_table(data: bytes) -> Any:
    """A CSV upload as a DataFrame with at least one text column; ValueError says why not."""
    import io

    import pandas as pd

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text; save it as UTF-8 CSV") from None
    try:
        frame = pd.read_csv(io.StringIO(text), nrows=MAX_CSV_ROWS + 1, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise ValueError(f"the file is not a readable CSV ({exc})") from None
    if len(frame) > MAX_CSV_ROWS:
        raise ValueError(f"at most {MAX_CSV_ROWS:,} rows per file")
    def has_text(values: Any) -> bool:
        values = values.dropna().str.strip()
        values = values[values != ""]
        return bool(pd.to_numeric(values, errors="coerce").isna().any())

    columns = [c for c in frame.columns if has_text(frame[c])]
    if not columns:
        raise ValueError("the file has no column with text in it")
    return frame[columns]
