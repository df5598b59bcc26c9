"""Recommender: both lists against their baselines, the catalogue policy, one product per
type, filters, fallback, fold-in, input rules."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ml.catalogue import EXCLUDED_DEPARTMENTS, department_name
from ml.errors import InvalidInput
from ml.grocery import MIN_HOUSEHOLDS, personas
from ml.recommender import RecommendContext, RecommendQuery

HOUSEHOLDS = 100  # as the issue counted: 100 households' top-10 lists


@pytest.fixture(scope="module")
def household(recommender) -> str:  # type: ignore[no-untyped-def]
    return str(recommender.known_users()[10])


@pytest.fixture(scope="module")
def sample(recommender) -> list[str]:  # type: ignore[no-untyped-def]
    users = recommender.known_users()
    return [users[i] for i in np.linspace(0, len(users) - 1, HOUSEHOLDS).astype(int)]


def column(recommender, item_id: str) -> int:  # type: ignore[no-untyped-def]
    return int(np.flatnonzero(recommender.trained.item_ids.astype(str) == item_id)[0])


def bought(recommender, household: str) -> set[str]:  # type: ignore[no-untyped-def]
    matrix = recommender.trained.user_items
    row = recommender.known_users().index(household)
    return {str(recommender.trained.item_ids[c])
            for c in matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]]}


# -- the holdout --------------------------------------------------------------------------------

def test_each_list_beats_its_baseline_on_the_held_out_weeks(recommender) -> None:  # type: ignore[no-untyped-def]
    """Discover: ALS at least 1.2x popularity's NDCG@10 (the issue's target); Buy again:
    recency-weighted purchases above plain counts. Both over most households."""
    evaluation = recommender.info()["evaluation"]
    assert min(evaluation["households"].values()) > 1500
    assert evaluation["als"]["ndcg@10"] >= 1.2 * evaluation["popularity"]["ndcg@10"]
    assert evaluation["als"]["precision@10"] > evaluation["popularity"]["precision@10"]
    assert evaluation["als"]["coverage"] > evaluation["popularity"]["coverage"]
    assert evaluation["recency_frequency"]["ndcg@10"] > evaluation["frequency"]["ndcg@10"]
    for model in ("als", "popularity", "recency_frequency", "frequency"):
        assert set(evaluation[model]) == {"precision@10", "ndcg@10", "coverage", "diversity"}


def test_the_card_states_the_catalogue_policy(recommender) -> None:  # type: ignore[no-untyped-def]
    info = recommender.info()
    assert all(department in info["catalogue_policy"] for department in EXCLUDED_DEPARTMENTS)
    assert "one product of each product type" in info["catalogue_policy"]
    assert "Buy again" in info["task"] and "Discover" in info["task"]


def test_data_filtering(recommender) -> None:  # type: ignore[no-untyped-def]
    info = recommender.info()
    # of 2,469 households a few bought only niche products; they get the popular fallback
    assert 2400 < info["households"] <= 2469
    assert 10_000 < info["items"] < 92_331
    reach = (recommender.trained.user_items > 0).sum(axis=0)
    assert reach.min() >= MIN_HOUSEHOLDS


# -- what gets recommended: the three figures over 100 households ---------------------

@pytest.mark.parametrize("kind", ["discover", "buy_again"])
def test_no_fuel_coupons_or_unknown_departments_and_one_item_per_type(
        recommender, sample: list[str], kind: str) -> None:  # type: ignore[no-untyped-def]
    """The issue counted 6% fuel, 1.5% unknown department and 13.5% repeated product types
    in 100 households' top-10 lists: each is now 0."""
    trained = recommender.trained
    shown, repeats = 0, 0
    for user in sample:
        items = recommender.recommend(user, kind=kind).recommendations
        columns = [column(recommender, i.item_id) for i in items]
        assert not [i.department for i in items if i.department in EXCLUDED_DEPARTMENTS]
        assert not [trained.exclusions[c] for c in columns if trained.exclusions[c]]
        kinds = Counter(int(trained.kinds[c]) for c in columns)
        repeats += sum(n - 1 for n in kinds.values())
        shown += len(items)
    assert repeats == 0
    assert shown > HOUSEHOLDS * 9  # nearly every list is full


def test_the_policy_and_the_type_rule_change_real_lists(recommender, sample: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Without them, the same households' lists do hold fuel and repeated types: the
    rules above are not passing by accident."""
    departments, repeats = Counter(), 0
    for user in sample:
        items = recommender.recommend(user, groceries_only=False, per_type=10).recommendations
        departments.update(i.department for i in items)
        kinds = Counter(int(recommender.trained.kinds[column(recommender, i.item_id)])
                        for i in items)
        repeats += sum(n - 1 for n in kinds.values())
    assert departments["FUEL"] > 0 and repeats > 0


def test_sizes_of_one_product_type_count_as_one_type(recommender) -> None:  # type: ignore[no-untyped-def]
    """EGGS - LARGE and EGGS - X-LARGE are two sub-commodities of the data but one product
    type to a shopper: one egg product per list."""
    trained = recommender.trained
    eggs = [i for i, text in enumerate(trained.descriptions) if text.startswith("Eggs - Eggs - ")]
    assert len({trained.descriptions[i].split(" (")[0] for i in eggs}) >= 3  # sizes
    assert len({int(trained.kinds[i]) for i in eggs}) == 1
    milk = [i for i, text in enumerate(trained.descriptions)
            if text.startswith(("Fluid Milk Products - Fluid Milk White Only",
                                "Fluid Milk Products - Chocolate Milk"))]
    assert len({int(trained.kinds[i]) for i in milk}) == 2  # white and chocolate milk differ


@pytest.mark.parametrize("department", sorted(EXCLUDED_DEPARTMENTS))
def test_asking_for_a_left_out_department_lists_it(recommender, department: str) -> None:  # type: ignore[no-untyped-def]
    if department not in recommender.categories():
        pytest.skip(f"no product of {department} is bought by {MIN_HOUSEHOLDS} households")
    result = recommender.recommend("nobody", category=department.lower(), per_type=100)
    assert result.recommendations
    assert {i.department for i in result.recommendations} == {department}


def test_per_type_allows_more_of_one_type(recommender, sample: list[str]) -> None:  # type: ignore[no-untyped-def]
    most = 0
    for user in sample[:30]:
        items = recommender.recommend(user, limit=20, per_type=3).recommendations
        kinds = Counter(int(recommender.trained.kinds[column(recommender, i.item_id)])
                        for i in items)
        most = max(most, max(kinds.values()))
    assert most == 3


def test_left_out_names_what_the_policy_kept_off_a_list(recommender, sample: list[str]) -> None:  # type: ignore[no-untyped-def]
    reasons: Counter[str] = Counter()
    for user in sample[:40]:
        query = RecommendQuery(user)
        listed = {i.item_id for i in recommender(query).recommendations}
        for item, reason in recommender.left_out(query):
            assert item.item_id not in listed
            reasons[reason] += 1
    assert reasons["fuel at the petrol station"] > 0
    assert reasons["a product type already listed"] > 0


# -- the two lists ------------------------------------------------------------------------------

def test_buy_again_lists_only_what_the_household_bought(recommender, sample: list[str]) -> None:  # type: ignore[no-untyped-def]
    for user in sample[:30]:
        result = recommender.recommend(user, kind="buy_again", limit=20)
        assert result.strategy == "buy_again" and result.user_id == user
        assert {i.item_id for i in result.recommendations} <= bought(recommender, user)
        scores = [i.score for i in result.recommendations]
        assert scores == sorted(scores, reverse=True)


def test_buy_again_ranks_by_recency_weighted_purchases(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    """Its score is the household's purchases, each weighted by how recent it was: at most
    the number of purchases, and the top item has the highest such weight of the row."""
    trained = recommender.trained
    row = recommender.known_users().index(household)
    result = recommender.recommend(household, kind="buy_again", limit=5, per_type=100,
                                   groceries_only=False)
    counts = recommender.times_bought(household, [i.item_id for i in result.recommendations])
    for item, count in zip(result.recommendations, counts, strict=True):
        assert 0 < item.score <= count
        assert item.score == pytest.approx(
            float(trained.recent[row, column(recommender, item.item_id)]), abs=1e-6)
    assert result.recommendations[0].score == pytest.approx(trained.recent[row].max(), abs=1e-6)


def test_discover_lists_nothing_the_household_bought(recommender, sample: list[str]) -> None:  # type: ignore[no-untyped-def]
    for user in sample[:30]:
        result = recommender.recommend(user)
        assert result.strategy == "als"
        assert not {i.item_id for i in result.recommendations} & bought(recommender, user)


def test_buy_again_is_empty_without_a_history(recommender) -> None:  # type: ignore[no-untyped-def]
    assert recommender.recommend("nobody", kind="buy_again").recommendations == ()
    picked = recommender.recommend("nobody", limit=2).recommendations
    query = RecommendQuery("new", items=tuple(i.item_id for i in picked), kind="buy_again")
    assert recommender(query).recommendations == ()


def test_the_spec_query_still_means_discover(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    from ml.contract import query_of

    spec = query_of(type(recommender), {"user_id": household, "context": {"category": None},
                                        "limit": 10})
    assert spec.kind == "discover" and spec.per_type == 1 and spec.groceries_only
    assert recommender(spec) == recommender.recommend(household)


def test_known_household_gets_als_items_it_has_not_bought(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    result = recommender.recommend(household, limit=10)
    assert result.strategy == "als"
    assert result.user_id == household
    assert len(result.recommendations) == 10
    assert not bought(recommender, household) & {i.item_id for i in result.recommendations}
    scores = [item.score for item in result.recommendations]
    assert scores == sorted(scores, reverse=True)
    assert all(" - " in item.description or "(" in item.description
               for item in result.recommendations)


def test_include_purchased(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    result = recommender.recommend(household, limit=20, exclude_purchased=False)
    assert bought(recommender, household) & {item.item_id for item in result.recommendations}


@pytest.mark.parametrize("category", ["PRODUCE", "produce", " Meat "])
def test_category_filters_by_department(recommender, household: str, category: str) -> None:  # type: ignore[no-untyped-def]
    for kind in ("discover", "buy_again"):
        result = recommender.recommend(household, limit=15, category=category, kind=kind)
        assert {item.department for item in result.recommendations} == {
            category.strip().upper()}
    assert len(recommender.recommend(household, limit=15, category=category).recommendations) \
        == 15


def test_history_filters_by_department_and_counts_purchases(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    everything = recommender.history(household, limit=100)
    produce = recommender.history(household, limit=100, category="produce")
    assert produce and {item.department for item in produce} == {"PRODUCE"}
    assert produce == [item for item in everything if item.department == "PRODUCE"]
    counts = recommender.times_bought(household, [item.item_id for item in everything])
    assert counts == [item.score for item in everything] and min(counts) >= 1
    assert recommender.times_bought("nobody", [everything[0].item_id, "no-such"]) == [0, 0]


def test_departments_have_readable_names(recommender) -> None:  # type: ignore[no-untyped-def]
    names = {code: department_name(code) for code in recommender.categories()}
    assert names["MEAT-PCKGD"] == "Packaged meat" and names["DRUG GM"] == "Drugstore"
    assert all(name and name != name.upper() for name in names.values()), names


def test_unknown_category_lists_valid_ones(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        recommender.recommend(household, category="spaceships")
    assert "PRODUCE" in caught.value.details["valid"]
    assert caught.value.field == "category"


@pytest.mark.parametrize("user_id", ["999999", "not-a-household", "  7777777 "])
def test_unknown_household_gets_popular_items_flagged(recommender, user_id: str) -> None:  # type: ignore[no-untyped-def]
    result = recommender.recommend(user_id, limit=5)
    assert result.strategy == "popular"
    assert len(result.recommendations) == 5
    assert result.recommendations[0].score >= result.recommendations[-1].score
    meat = recommender.recommend(user_id, limit=5, category="meat")
    assert {item.department for item in meat.recommendations} == {"MEAT"}


def test_integer_and_string_ids_agree(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    assert recommender.recommend(int(household)) == recommender.recommend(household)


def test_fold_in_for_a_new_household(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    picked = [item.item_id for item in recommender.history(household, limit=8)]
    result = recommender.recommend_for_items(picked, limit=10)
    assert result.strategy == "fold_in"
    assert not set(picked) & {item.item_id for item in result.recommendations}
    # a household like the one whose items were picked gets overlapping suggestions
    known = {item.item_id for item in recommender.recommend(household, limit=50).recommendations}
    assert known & {item.item_id for item in result.recommendations}
    assert recommender.recommend_for_items([], limit=3).strategy == "popular"
    with pytest.raises(InvalidInput):
        recommender.recommend_for_items(["no-such-item"])


@pytest.mark.parametrize(("kwargs", "field"), [
    pytest.param({"user_id": ""}, "user_id", id="empty-user"),
    pytest.param({"user_id": None}, "user_id", id="none-user"),
    pytest.param({"user_id": True}, "user_id", id="bool-user"),
    pytest.param({"user_id": "x" * 65}, "user_id", id="long-user"),
    pytest.param({"user_id": "1", "limit": 0}, "limit", id="zero-limit"),
    pytest.param({"user_id": "1", "limit": 101}, "limit", id="huge-limit"),
    pytest.param({"user_id": "1", "limit": -5}, "limit", id="negative-limit"),
    pytest.param({"user_id": "1", "limit": "10"}, "limit", id="string-limit"),
    pytest.param({"user_id": "1", "category": ""}, "category", id="empty-category"),
    pytest.param({"user_id": "1", "category": 5}, "category", id="number-category"),
    pytest.param({"user_id": "1", "per_type": 0}, "per_type", id="zero-per-type"),
    pytest.param({"user_id": "1", "kind": "impulse"}, "kind", id="unknown-kind"),
])
def test_invalid_input(recommender, kwargs: dict, field: str) -> None:  # type: ignore[no-untyped-def, type-arg]
    user_id = kwargs.pop("user_id")
    with pytest.raises(InvalidInput) as caught:
        recommender.recommend(user_id, **kwargs)
    assert caught.value.field == field


def test_batch_predict(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    liked = recommender.history(household, limit=1)[0].item_id
    queries = [RecommendQuery(household, limit=3), RecommendQuery("nobody", limit=2),
               RecommendQuery("new", items=(liked,)),
               RecommendQuery(household, RecommendContext("produce"), kind="buy_again",
                              limit=2)]
    results = recommender.predict([recommender.prepare(q) for q in queries])
    assert [r.strategy for r in results] == ["als", "popular", "fold_in", "buy_again"]
    assert [len(r.recommendations) for r in results] == [3, 2, 10, 2]
    assert results == [recommender(q) for q in queries]


def test_personas_have_demographics() -> None:
    people = personas(5)
    assert len(people) == 5
    assert {"household_id", "age", "income"} <= set(people[0])


def test_a_serving_engine_pins_openblas_to_one_thread(registry) -> None:  # type: ignore[no-untyped-def]
    from threadpoolctl import threadpool_info

    from ml.engine import Engine

    Engine(registry).close()
    pools = [p for p in threadpool_info() if p["internal_api"] == "openblas"]
    assert pools and all(p["num_threads"] == 1 for p in pools)
