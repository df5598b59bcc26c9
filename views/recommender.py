"""Recommendations: a household's Buy again and Discover lists side by side, what the
catalogue policy kept off them; cold start by picking products."""

from collections import Counter

import pandas as pd
import streamlit as st

from ml.catalogue import department_name
from ml.recommender import RecommendContext, RecommendedItem, RecommendQuery
from views.shared import info_card, latency_caption, model, serve


def table(items: list[RecommendedItem] | tuple[RecommendedItem, ...], column: str,
          values: list[float], number: str, help: str) -> None:
    """Products as a table that fits half the page; `values` as bars in `column`."""
    frame = pd.DataFrame([{"product": i.description, "department": department_name(i.department),
                           column: value} for i, value in zip(items, values, strict=True)])
    top = max(values, default=1.0)
    st.dataframe(frame, hide_index=True, width="stretch", column_config={
        "product": st.column_config.TextColumn(
            width=220, help="category - type (brand, size); hover a cell for all of it"),
        "department": st.column_config.TextColumn(width=100),
        column: st.column_config.ProgressColumn(format=number, min_value=0.0, help=help,
                                                max_value=max(top, 1e-9), width=100)})


def policy_note(left_out: list[tuple[str, RecommendedItem, str]]) -> None:
    """What the catalogue policy kept off the lists above, and why."""
    reasons = Counter(reason for _, _, reason in left_out)
    summary = ", ".join(f"{reason} ({n})" for reason, n in reasons.most_common())
    st.caption(":material/policy: **Catalogue policy**: no fuel, coupons or unlabelled "
               "products unless you pick their department; one product of each type (one "
               "milk, one bread) unless you allow several. "
               + (f"Kept off these lists: {summary}." if left_out else
                  "It changed nothing in these lists."))
    if left_out:
        with st.expander(f"The {len(left_out)} products it kept off"):
            st.dataframe(pd.DataFrame([{"list": where, "product": item.description,
                                        "department": department_name(item.department),
                                        "why": reason} for where, item, reason in left_out]),
                         hide_index=True, width="stretch", column_config={
                             "list": st.column_config.TextColumn(width=80),
                             "department": st.column_config.TextColumn(width=140)})


st.title("Product recommendations")
recommender = model("recommender")
if recommender is None:
    st.stop()
st.caption("Two lists a shopper expects: **Buy again**, what the household already buys, by "
           "how often and how recently; **Discover**, what it does not buy yet but households "
           "like it do (ALS).")

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
    departments: list[str] = sorted(recommender.categories(),  # type: ignore[attr-defined]
                                    key=department_name)
    left, middle, right = st.columns([5, 5, 3], vertical_alignment="bottom")
    category = left.selectbox(
        "Department", ["(all)", *departments],
        format_func=lambda c: "All departments" if c == "(all)" else department_name(c),
        help="Filters both lists. Fuel, coupons and unlabelled products are listed only "
             "when you pick their department.")
    limit = middle.slider("How many", 1, 30, 10)
    several = right.toggle("Several of one type", help="By default a list holds one product "
                           "of each type (one white milk, one bread); this allows three.")
    department = None if category == "(all)" else category
    shape = {"context": RecommendContext(department), "limit": limit,
             "per_type": 3 if several else 1}
    again_query = RecommendQuery(user_id, kind="buy_again", **shape)  # type: ignore[arg-type]
    discover_query = RecommendQuery(user_id, **shape)  # type: ignore[arg-type]
    buy_again, _ = serve("recommender", again_query)
    again = buy_again.result if buy_again is not None else None
    served, ms = serve("recommender", discover_query)
    discover = served.result if served is not None else None
    if again is not None and discover is not None:
        if discover.strategy == "popular":
            st.info("Unknown household: Discover shows the most popular products instead.",
                    icon=":material/info:")
        history, suggestions = st.columns(2)
        with history:
            st.subheader("Buy again")
            if again.recommendations:
                st.caption("Bought often and lately first")
                bought = recommender.times_bought(  # type: ignore[attr-defined]
                    user_id, [i.item_id for i in again.recommendations])
                table(again.recommendations, "times bought", bought, "%d",
                      "How many times the household bought it this year")
            else:
                st.caption("No purchase history" + (" in this department." if department
                                                    else "."))
        with suggestions:
            st.subheader("Discover")
            st.caption("Not bought yet; bought by households like this one")
            table(discover.recommendations, "score",
                  [i.score for i in discover.recommendations], "%.2f",
                  "How well the product fits the household: higher is better")
            latency_caption(ms, cached=served is not None and served.cached)
        policy_note([("Buy again", item, why) for item, why in recommender.left_out(  # type: ignore[attr-defined]
            again_query)] + [("Discover", item, why) for item, why in recommender.left_out(  # type: ignore[attr-defined]
                discover_query)])

with cold:
    shelf, _ = serve("recommender", RecommendQuery("new-customer", limit=40))
    popular = shelf.result.recommendations if shelf is not None else []
    picked = st.multiselect("Pick a few products you like",
                            [i.item_id for i in popular],
                            format_func={i.item_id: i.description for i in popular}.get,
                            select_all=False)  # picking everything recommends nothing
    if picked:
        picks, ms = serve("recommender", RecommendQuery("new-customer", limit=10,
                                                        items=tuple(picked)))
        if picks is not None:
            st.subheader("Recommended for you")
            latency_caption(ms, cached=picks.cached)
            result = picks.result
            table(result.recommendations, "score",
                  [i.score for i in result.recommendations], "%.2f",
                  "How well the product fits your picks: higher is better")

info_card(recommender.info())
