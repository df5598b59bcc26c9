"""Recommendations: a household's history next to what ALS suggests; cold start by picking."""

import math

import pandas as pd
import streamlit as st

from ml.recommender import RecommendContext, RecommendedItem, RecommendQuery
from views.shared import info_card, latency_caption, model, serve


def table(items: list[RecommendedItem] | tuple[RecommendedItem, ...], column: str,
          values: list[float], number: str, help: str) -> None:
    """Products as a table that fits half the page; `values` as bars in `column`."""
    frame = pd.DataFrame([{"product": i.description, "department": i.department.title(),
                           column: value} for i, value in zip(items, values, strict=True)])
    top = max(values, default=1.0)
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "product": st.column_config.TextColumn(
            width=230, help="category - type (brand, size); hover a cell for all of it"),
        "department": st.column_config.TextColumn(width=90),
        column: st.column_config.ProgressColumn(format=number, min_value=0.0, help=help,
                                                max_value=max(top, 1e-9), width=100)})


st.title("Product recommendations")
recommender = model("recommender")
if recommender is None:
    st.stop()

known, cold = st.tabs(["A household", "New customer"])
with known:
    people = {p["household_id"]: p for p in recommender.personas(12)}  # type: ignore[attr-defined]
    ids = sorted(recommender.known_users(), key=int)  # type: ignore[attr-defined]
    choice = st.selectbox(
        "Household", [*sorted(people, key=int), "another id..."],
        format_func=lambda h: h if h not in people else
        f"#{h}: {people[h]['age']}, {people[h]['income']}, {people[h]['household_comp']}")
    user_id = st.text_input(
        "Household id", ids[0], placeholder=f"{ids[0]} to {ids[-1]}",
        help=f"{len(ids):,} households have a purchase history, with ids from {ids[0]} to "
             f"{ids[-1]} (a few numbers in between are unused). Any other id gets the most "
             "popular products.") if choice == "another id..." else choice
    left, right = st.columns(2)
    category = left.selectbox("Department", ["(all)", *recommender.categories()],
                              help="Filters both tables")
    limit = right.slider("How many", 1, 30, 10)
    department = None if category == "(all)" else category
    result, ms = serve("recommender", RecommendQuery(
        user_id, RecommendContext(department), limit=limit))
    if result is not None:
        if result.strategy == "popular":
            st.info("Unknown household: showing the most popular products instead.",
                    icon=":material/info:")
        history, suggestions = st.columns(2)
        with history:
            st.subheader("Bought before")
            bought = recommender.history(  # type: ignore[attr-defined]
                user_id, limit=limit, category=department)
            if bought:
                # the model keeps log(1 + purchases); people count purchases
                table(bought, "times bought", [round(math.expm1(i.score)) for i in bought],
                      "%d", "How many times the household bought it")
            else:
                st.caption("No purchase history" + (" in this department." if department
                                                    else "."))
        with suggestions:
            st.subheader("Recommended")
            latency_caption(ms)
            table(result.recommendations, "score", [i.score for i in result.recommendations],
                  "%.2f", "How well the product fits the household: higher is better")

with cold:
    shelf, _ = serve("recommender", RecommendQuery("new-customer", limit=40))
    popular = shelf.recommendations if shelf is not None else []
    picked = st.multiselect("Pick a few products you like",
                            [i.item_id for i in popular],
                            format_func={i.item_id: i.description for i in popular}.get,
                            select_all=False)  # picking everything recommends nothing
    if picked:
        result, ms = serve("recommender", RecommendQuery("new-customer", limit=10,
                                                         items=tuple(picked)))
        if result is not None:
            st.subheader("Recommended for you")
            latency_caption(ms)
            table(result.recommendations, "score",
                  [i.score for i in result.recommendations], "%.2f",
                  "How well the product fits your picks: higher is better")

info_card(recommender.info())
