"""Streamlit entry: page config and navigation, nothing else.

The page scripts live in views/, not pages/: Streamlit treats a pages/ folder beside the
entry script as legacy auto-discovered pages until st.navigation has run once in the
process, so a first visitor arriving on a deep link would bypass this navigation.
"""

import streamlit as st

st.set_page_config(page_title="Real-time ML", page_icon=":material/bolt:", layout="wide")
st.navigation([
    st.Page("views/home.py", title="Overview", icon=":material/home:", default=True),
    st.Page("views/sentiment.py", title="Sentiment", icon=":material/sentiment_satisfied:"),
    st.Page("views/image.py", title="Image classification", icon=":material/image:"),
    st.Page("views/recommendations.py", title="Recommendations",
            icon=":material/shopping_cart:"),
    st.Page("views/benchmarks.py", title="Benchmarks", icon=":material/speed:"),
]).run()
