"""The app's pages, built in one place: app.py navigates over them, the overview links to
them.

A model with a script of its own in views/ (views/<model name>.py: the built-ins) gets that
page; any other model, a plugin say, gets the generic "try it" page built from its
contract. Titles and icons come from the model classes; `shown` (ML_UI_PAGES) chooses.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import streamlit as st

from views.model import page as model_page
from views.shared import look, registry

VIEWS = Path(__file__).resolve().parent
ICON = VIEWS / "icon.png"  # served by this server: a :material/: page icon is fetched from Google


def pages(shown: Collection[str]) -> list[st.Page]:
    """The overview, a page per registered model and the benchmarks, as `shown` says."""
    found = []
    if "overview" in shown:
        found.append(st.Page(VIEWS / "home.py", title="Overview", icon=":material/home:"))
    for name in registry().names():
        if "models" not in shown and name not in shown:
            continue
        title, icon = look(name)
        own = VIEWS / f"{name}.py"
        found.append(st.Page(own if own.exists() else model_page(name), title=title,
                             url_path=name, icon=f":material/{icon}:"))
    if "benchmarks" in shown:
        found.append(st.Page(VIEWS / "benchmarks.py", title="Benchmarks",
                             icon=":material/speed:"))
    return found
