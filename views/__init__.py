"""Streamlit page scripts (run by app.py's st.navigation): title -> widgets -> ml -> render."""
