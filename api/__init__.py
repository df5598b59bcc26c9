"""REST API over the ml core (Starlette); runs alone or inside the Streamlit process."""
