"""Streamlit entry: page config, the optional password, and navigation, nothing else.

The page scripts live in views/, not pages/: Streamlit treats a pages/ folder beside the
entry script as legacy auto-discovered pages until st.navigation has run once in the
process, so a first visitor arriving on a deep link would bypass this navigation.
ML_UI_PAGES chooses the pages; ML_UI_PASSWORD puts every page behind a password.
"""

import streamlit as st

from views.shared import registry, unlocked

PAGES = {  # name in ML_UI_PAGES -> (script, title, icon)
    "overview": ("views/home.py", "Overview", ":material/home:"),
    "sentiment": ("views/sentiment.py", "Sentiment", ":material/sentiment_satisfied:"),
    "image": ("views/image.py", "Image classification", ":material/image:"),
    "recommendations": ("views/recommendations.py", "Recommendations",
                        ":material/shopping_cart:"),
    "benchmarks": ("views/benchmarks.py", "Benchmarks", ":material/speed:"),
}

st.set_page_config(page_title="Real-time ML", page_icon=":material/bolt:", layout="wide")
settings = registry().settings
if unlocked(settings.ui_password):
    chosen = [PAGES[name] for name in PAGES if name in settings.ui_pages]
    st.navigation([st.Page(script, title=title, icon=icon, default=index == 0)
                   for index, (script, title, icon) in enumerate(chosen)]).run()
