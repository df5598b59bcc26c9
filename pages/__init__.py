"""Streamlit pages: title -> widgets -> ml call -> render."""
