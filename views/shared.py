"""What every page uses: the process-wide registry and engine the REST API shares, so a
page's prediction joins the API's batches, queue limits and cache; and the API's rate-limit
buckets, so a visitor's predictions count against the same limit as their API calls."""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import streamlit as st

from api.config import ApiSettings
from api.ratelimit import TokenBuckets, client_address, default_buckets, networks
from ml.contract import Model, title_of
from ml.engine import Engine, Served, default_engine
from ml.errors import MLError, ModelUnavailable
from ml.registry import Registry, default_registry

T = TypeVar("T")
MAX_CSV_ROWS = 5000


@st.cache_resource(show_spinner=False)
def registry() -> Registry:
    """The registry of this process (the same object the REST API serves from)."""
    return default_registry()


@st.cache_resource(show_spinner=False)
def engine() -> Engine:
    """The engine of this process (the same batchers and caches the REST API uses)."""
    return default_engine()


@st.cache_resource(show_spinner=False)
def ui_settings() -> ApiSettings:
    """The HTTP and UI settings of this process (ML_UI_*, keys, rate limits)."""
    return ApiSettings.from_env()


def look(name: str) -> tuple[str, str]:
    """A model's title and Material icon name, from its class; a model that cannot even
    be imported keeps its name (its page then says why it is unavailable)."""
    try:
        cls = registry().model_class(name)
    except MLError:
        return name.capitalize(), "error"
    return title_of(cls), getattr(cls, "icon", "") or "model_training"


def buckets() -> TokenBuckets:
    """The rate-limit buckets of this process (the REST API's own, in the one process)."""
    settings = ui_settings()
    return default_buckets(settings.rate_limit_per_second, settings.rate_limit_burst)


def client() -> str:
    """The visitor's bucket: their address, as the API would count it."""
    headers = st.context.headers
    forwarded = headers.get("x-forwarded-for", "")
    address = st.context.ip_address  # None on localhost
    scope = {"client": (address if isinstance(address, str) and address else "127.0.0.1", 0),
             "headers": [(b"x-forwarded-for", forwarded.encode("latin-1", "replace"))]
             if forwarded else []}
    return "ip:" + client_address(scope, networks(ui_settings().trusted_proxies))


def admitted() -> bool:
    """Spend one of the visitor's tokens; False (and a message) when they have none."""
    wait = buckets().take(client())
    if wait:
        limits = buckets()
        st.warning(f"Too many predictions from your address: the limit is "
                   f"{limits.rate:g} a second (bursts of {limits.burst:g}), shared with the "
                   f"REST API. Try again in {math.ceil(wait)} s.", icon=":material/timer:")
    return not wait


def serve(name: str, query: Any) -> tuple[Served | None, float]:
    """One prediction through the engine, counted against the visitor's rate limit; ml
    errors become messages. Returns (the served answer or None, milliseconds); the answer
    says whether the prediction cache gave it (`latency_caption`)."""
    return limited(lambda: engine().predict(name, query))


def serve_many(name: str, queries: Sequence[Any]) -> tuple[list[Any] | None, float]:
    """A batch through the engine (one model call), counted as one request."""
    return limited(lambda: [s.result for s in engine().predict_many(name, queries)])


def limited(call: Callable[[], T]) -> tuple[T | None, float]:
    """`timed(call)` if the visitor's rate limit admits it, else (None, 0)."""
    if not admitted():
        return None, 0.0
    return timed(call)


@st.cache_resource(show_spinner=False)
def password_failures() -> TokenBuckets:
    """Wrong UI passwords per visitor address: a burst, then a few a minute."""
    settings = ui_settings()
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


def latency_caption(ms: float, *, cached: bool = False, work: str = "") -> None:
    """The in-process latency, the point of the whole demo; an answer from the prediction
    cache says so (its time is a lookup's, not the model's), and `work` names what the
    call did beyond the prediction (an explanation)."""
    if cached:
        st.caption(f":material/cached: {ms:.2f} ms in-process: answered from the prediction "
                   "cache (the same input was classified before, here or through the API)")
    else:
        st.caption(f":material/bolt: {ms:.2f} ms in-process{work}")


CARD_FIELDS = ("task", "architecture", "data", "weights", "training", "source", "limits")


def info_card(info: dict[str, Any]) -> None:
    """A model card in an expander: its fields as text, its evaluation as a table."""
    with st.expander("Model card"):
        st.markdown(f"**{info.get('name', '')}** `{info.get('version', '')}`")
        for key in CARD_FIELDS:
            if info.get(key):
                st.markdown(f"**{key.capitalize()}**: {info[key]}")
        for key, value in info.items():  # the model's other fields, read as text
            if key in (*CARD_FIELDS, "name", "version", "evaluation", "headline") or not value:
                continue
            title = key.replace("_", " ").capitalize()
            if isinstance(value, dict):
                st.markdown(f"**{title}**:  \n" + "  \n".join(
                    f"{k.replace('_', ' ')}: {readable(k, v)}" for k, v in value.items()))
            else:
                st.markdown(f"**{title}**: {readable(key, value)}")
        rows = flatten(info.get("evaluation", {}))
        if rows:
            st.markdown("**Evaluation**")
            st.dataframe([{"figure": k, "value": str(v)} for k, v in rows],
                         hide_index=True, width="stretch")


def readable(key: str, value: Any) -> str:
    """A model-card value as people read it: sizes in bytes as MB, numbers with commas."""
    if key.endswith("_bytes") and isinstance(value, int):
        return f"{value / 2**20:g} MB"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested figures as (dotted name, value) rows."""
    if isinstance(tree, dict):
        rows: list[tuple[str, Any]] = []
        for key, value in tree.items():
            rows += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, tree)]


def read_text_table(data: bytes) -> Any:
    """A CSV upload as a DataFrame, every column kept; ValueError says why it cannot be
    used (not UTF-8, not a CSV, too many rows, no column with text)."""
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
    if not text_columns(frame):
        raise ValueError("the file has no column with text in it")
    return frame


def text_columns(frame: Any) -> list[str]:
    """Columns holding text (not only numbers or blanks)."""
    import pandas as pd

    def has_text(values: Any) -> bool:
        values = values.dropna().str.strip()
        values = values[values != ""]
        return bool(pd.to_numeric(values, errors="coerce").isna().any())

    return [c for c in frame.columns if has_text(frame[c])]
