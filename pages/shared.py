"""The one cached model loader every page uses: the process-wide registry the API shares."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from ml.errors import MLError, ModelUnavailable
from ml.registry import Model, Registry, default_registry

T = TypeVar("T")


@st.cache_resource(show_spinner=False)
def registry() -> Registry:
    """The registry of this process (the same object the REST API serves from)."""
    return default_registry()


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
