"""The recommendations page, headlessly (AppTest) on the real model: both lists, the catalogue
policy and its effect, readable departments, the one-per-type switch."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ml.catalogue import department_name
from ml.recommender import RecommendQuery
from ml.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def loaded(registry: Registry) -> None:
    registry.warmup()


def page() -> AppTest:
    app = AppTest.from_file(str(ROOT / "views" / "recommender.py"), default_timeout=90)
    app.run()
    assert not app.exception, app.exception
    return app


def household(app: AppTest, user_id: str) -> AppTest:
    app.selectbox[0].select("another id...").run()
    app.text_input[0].input(user_id).run()
    assert not app.exception, app.exception
    return app


def captions(app: AppTest) -> str:
    return "\n".join(c.value for c in app.caption) + "\n".join(i.value for i in app.info)


def with_fuel_left_out(recommender) -> str:  # type: ignore[no-untyped-def]
    """A household whose Discover list would hold fuel without the catalogue policy."""
    for user in recommender.known_users():
        if any(reason == "fuel at the petrol station"
               for _, reason in recommender.left_out(RecommendQuery(user))):
            return str(user)
    raise AssertionError("no household's list would hold fuel")


def test_both_lists_side_by_side(recommender) -> None:  # type: ignore[no-untyped-def]
    app = page()
    assert [s.value for s in app.subheader] == ["Buy again", "Discover"]
    again, discover = app.dataframe[0].value, app.dataframe[1].value
    assert list(again.columns) == ["product", "department", "times bought"]
    assert list(discover.columns) == ["product", "department", "score"]
    assert len(again) == len(discover) == 10
    user = app.selectbox[0].value
    again_items = recommender.recommend(user, kind="buy_again").recommendations
    counts = recommender.times_bought(user, [i.item_id for i in again_items])
    assert min(counts) > 0 and list(again["times bought"]) == counts  # bought, every one
    assert list(again["product"]) == [i.description for i in again_items]
    expected = recommender.recommend(user)
    assert list(discover["product"]) == [i.description for i in expected.recommendations]


def test_discover_lists_nothing_the_household_bought(recommender) -> None:  # type: ignore[no-untyped-def]
    app = page()
    user = app.selectbox[0].value
    products = {i.description: i.item_id for i in recommender.recommend(user).recommendations}
    shown = [products[p] for p in app.dataframe[1].value["product"]]
    assert recommender.times_bought(user, shown) == [0] * len(shown)


def test_departments_read_as_words_and_filter_both_lists() -> None:
    app = page()
    box = app.selectbox[1]
    names = box.options[1:]
    assert box.options[0] == "All departments"
    assert names == sorted(names) and "Packaged meat" in names and "MEAT-PCKGD" not in names
    for frame in app.dataframe[:2]:
        assert all(name != name.upper() for name in frame.value["department"])
    box.select("MEAT-PCKGD").run()
    again, discover = app.dataframe[0].value, app.dataframe[1].value
    assert len(again) and set(again["department"]) == {"Packaged meat"}
    assert len(discover) and set(discover["department"]) == {"Packaged meat"}


def test_the_page_states_the_policy_and_what_it_kept_off(recommender) -> None:  # type: ignore[no-untyped-def]
    app = household(page(), with_fuel_left_out(recommender))
    text = captions(app)
    assert "Catalogue policy" in text and "fuel at the petrol station" in text
    kept_off = app.dataframe[2].value  # in the expander under the lists
    assert list(kept_off.columns) == ["list", "product", "department", "why"]
    assert "Fuel" in set(kept_off["department"])
    assert "Fuel" not in set(app.dataframe[1].value["department"])


def test_picking_the_fuel_department_lists_fuel(recommender) -> None:  # type: ignore[no-untyped-def]
    app = household(page(), with_fuel_left_out(recommender))
    app.selectbox[1].select("FUEL").run()
    assert set(app.dataframe[1].value["department"]) == {"Fuel"}


def test_one_product_per_type_unless_several_are_allowed(recommender) -> None:  # type: ignore[no-untyped-def]
    app = page()
    user = app.selectbox[0].value
    app.slider[0].set_value(30).run()

    def shown(per_type: int) -> list[str]:
        result = recommender.recommend(user, limit=30, per_type=per_type)
        return [i.description for i in result.recommendations]

    assert list(app.dataframe[1].value["product"]) == shown(1)
    app.toggle[0].set_value(True).run()
    assert list(app.dataframe[1].value["product"]) == shown(3) != shown(1)


def test_unknown_household_has_no_buy_again_and_popular_discover() -> None:
    app = household(page(), "999999999")
    text = captions(app)
    assert "most popular" in text and "No purchase history." in text
    assert [s.value for s in app.subheader] == ["Buy again", "Discover"]
    assert len(app.dataframe[0].value) == 10  # Discover's table is now the first one


def test_department_names_for_every_code(recommender) -> None:  # type: ignore[no-untyped-def]
    for code in recommender.categories():
        name = department_name(code)
        assert name and name != code, code
