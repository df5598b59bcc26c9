"""Streamlit entry: page config, the optional password, and navigation, nothing else.

The pages: the overview, a page per registered model, and the benchmarks. A model with a
script of its own in views/ (views/<model name>.py: the built-ins) gets that page; any
other model, a plugin say, gets the generic "try it" page built from its contract. Titles
and icons come from the model classes. ML_UI_PAGES chooses among the pages; ML_UI_PASSWORD
puts every page behind a password.

The page scripts live in views/, not pages/: Streamlit treats a pages/ folder beside the
entry script as legacy auto-discovered pages until st.navigation has run once in the
process, so a first visitor arriving on a deep link would bypass this navigation.
"""

from pathlib import Path

import streamlit as st

from views.model import page as model_page
from views.shared import look, registry, ui_settings, unlocked

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="Real-time ML", page_icon=":material/bolt:", layout="wide")
settings = ui_settings()
if unlocked(settings.ui_password):
    shown = settings.ui_pages
    pages = []
    if "overview" in shown:
        pages.append(st.Page("views/home.py", title="Overview", icon=":material/home:"))
    for name in registry().names():
        if "models" not in shown and name not in shown:
            continue
        title, icon = look(name)
        own = VIEWS / f"{name}.py"
        target = f"views/{own.name}" if own.exists() else model_page(name)
        pages.append(st.Page(target, title=title, url_path=name, icon=f":material/{icon}:"))
    if "benchmarks" in shown:
        pages.append(st.Page("views/benchmarks.py", title="Benchmarks", icon=":material/speed:"))
    st.navigation(pages).run()
