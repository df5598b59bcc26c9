"""Streamlit entry: page config, the optional password, and navigation, nothing else.

The pages (views/navigation.py): the overview, a page per registered model, and the
benchmarks. ML_UI_PAGES chooses among the pages; ML_UI_PASSWORD puts every page behind a
password.

The page scripts live in views/, not pages/: Streamlit treats a pages/ folder beside the
entry script as legacy auto-discovered pages until st.navigation has run once in the
process, so a first visitor arriving on a deep link would bypass this navigation.
"""

import streamlit as st

from views.navigation import ICON, pages
from views.shared import ui_settings, unlocked

st.set_page_config(page_title="Real-time ML", page_icon=str(ICON), layout="wide")
settings = ui_settings()
if unlocked(settings.ui_password):
    st.navigation(pages(settings.ui_pages)).run()
