"""Streamlit entry: page config and navigation, nothing else."""

import streamlit as st

st.set_page_config(page_title="Real-time ML", page_icon=":material/bolt:", layout="wide")
st.navigation([
    st.Page("pages/home.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/sentiment.py", title="Sentiment", icon=":material/sentiment_satisfied:"),
    st.Page("pages/image.py", title="Image classification", icon=":material/image:"),
    st.Page("pages/recommendations.py", title="Recommendations",
            icon=":material/shopping_cart:"),
]).run()
