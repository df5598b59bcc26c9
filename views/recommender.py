"""Recommendations: a household's history next to what ALS suggests; cold start by picking."""

import pandas as pd
import streamlit as st

from ml.recommender import RecommendContext, RecommendedItem, RecommendQuery
from views.shared import info_card, latency_caption, model, serve


def table(items: list[RecommendedItem] | tuple[RecommendedItem, ...], score: str) -> None:
    """Products as a table; the score as a bar."""
    frame = pd.DataFrame([{"product": i.description, "department": i.department.title(),
                           "id": i.item_id, score: i.score} for i in items])
    top = float(frame[score].max()) if len(frame) else 1.0
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "product": st.column_config.TextColumn(width=250, help="category - type (brand, size)"),
        "department": st.column_config.TextColumn(width=80),
        "id": st.column_config.TextColumn(width=60),
        score: st.column_config.ProgressColumn(format="%.2f", min_value=0.0,
                                               max_value=max(top, 1e-9), width=80)})


st.title("Product recommendations")
recommender = model("recommender")
if recommender is None:
    st.stop()

known, cold = st.tabs(["A household", "New customer"])
with known:
    people = {p["household_id"]: p for p in recommender.personas(12)}  # type: ignore[attr-defined]
    choice = st.selectbox(
        "Household", [*people, "another id..."],
        format_func=lambda h: h if h not in people else
        f"#{h}: {people[h]['age']}, {people[h]['income']}, {people[h]['household_comp']}")
    user_id = st.text_input("Household id", "1") if choice == "another id..." else choice
    left, right = st.columns(2)
    category = left.selectbox("Department", ["(all)", *recommender.categories()])
    limit = right.slider("How many", 1, 30, 10)
    result, ms = serve("recommender", RecommendQuery(
        user_id, RecommendContext(None if category == "(all)" else category), limit=limit))
    if result is not None:
        if result.strategy == "popular":
            st.info("Unknown household: showing the most popular products instead.",
                    icon=":material/info:")
        history, suggestions = st.columns(2)
        with history:
            st.subheader("Bought before")
            bought = recommender.history(user_id, limit=limit)
            if bought:
                table(bought, "log purchases")
            else:
                st.caption("No purchase history.")
        with suggestions:
            st.subheader("Recommended")
            latency_caption(ms)
            table(result.recommendations, "score")

with cold:
    shelf, _ = serve("recommender", RecommendQuery("new-customer", limit=40))
    popular = shelf.recommendations if shelf is not None else []
    picked = st.multiselect("Pick a few products you like",
                            [i.item_id for i in popular],
                            format_func={i.item_id: i.description for i in popular}.get)
    if picked:
        result, ms = serve("recommender", RecommendQuery("new-customer", limit=10,
                                                         items=tuple(picked)))
        if result is not None:
            st.subheader("Recommended for you")
            latency_caption(ms)
            table(result.recommendations, "score")

info_card(recommender.info())
