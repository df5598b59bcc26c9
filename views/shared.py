"""What every page uses: the process-wide registry and engine the REST API shares, so a
page's prediction joins the API's batches, queue limits and cache; and the API's rate-limit
buckets, so a visitor's predictions count against the same limit as their API calls."""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st

from api.ratelimit import TokenBuckets, client_address, default_buckets, networks
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


def buckets() -> TokenBuckets:
    """The rate-limit buckets of this process (the REST API's own, in the one process)."""
    settings = registry().settings
    return default_buckets(settings.rate_limit_per_second, settings.rate_limit_burst)


def client() -> str:
    """The visitor's bucket: their address, as the API would count it."""
    headers = st.context.headers
    forwarded = headers.get("x-forwarded-for", "")
    address = st.context.ip_address  # None on localhost
    scope = {"client": (address if isinstance(address, str) and address else "127.0.0.1", 0),
             "headers": [(b"x-forwarded-for", forwarded.encode("latin-1", "replace"))]
             if forwarded else []}
    return "ip:" + client_address(scope, networks(registry().settings.trusted_proxies))


def admitted() -> bool:
    """Spend one of the visitor's tokens; False (and a message) when they have none."""
    wait = buckets().take(client())
    if wait:
        limits = buckets()
        st.warning(f"Too many predictions from your address: the limit is "
                   f"{limits.rate:g} a second (bursts of {limits.burst:g}), shared with the "
                   f"REST API. Try again in {math.ceil(wait)} s.", icon=":material/timer:")
    return not wait


def serve(name: str, query: Any) -> tuple[Any, float]:
    """One prediction through the engine, counted against the visitor's rate limit; ml
    errors become messages. Returns (result or None, milliseconds)."""
    return limited(lambda: engine().predict(name, query).result)


def limited(call: Callable[[], T]) -> tuple[T | None, float]:
    """`timed(call)` if the visitor's rate limit admits it, else (None, 0)."""
    if not admitted():
        return None, 0.0
    return timed(call)


@st.cache_resource(show_spinner=False)
def password_failures() -> TokenBuckets:
    """Wrong UI passwords per visitor address: a burst, then a few a minute."""
    settings = registry().settings
    return TokenBuckets(settings.auth_failures_per_minute / 60, settings.auth_failure_burst)


def unlocked(password: str) -> bool:
    """True if the UI needs no password or this session has given it; else shows the form."""
    if not password or st.session_state.get("unlocked"):
        return True
    st.title("Real-time ML predictions")
    with st.form("password"):
        given = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Enter")
    if submitted:
        if password_failures().remaining(client()) < 1:
            st.error("Too many wrong passwords from your address; try again later.")
        elif hmac.compare_digest(given.encode(), password.encode()):
            st.session_state["unlocked"] = True
            st.rerun()
        else:
            password_failures().take(client())
            st.error("Wrong password.")
    return False


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
