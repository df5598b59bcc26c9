"""Recommender: evaluation, filters, fallback, fold-in, input rules."""

from __future__ import annotations

import pytest

from ml.errors import InvalidInput
from ml.grocery import MIN_HOUSEHOLDS, personas
from ml.recommender import RecommendQuery


@pytest.fixture(scope="module")
def household(recommender) -> str:  # type: ignore[no-untyped-def]
    return str(recommender.known_users()[10])


def test_als_beats_popularity_on_the_holdout(recommender) -> None:  # type: ignore[no-untyped-def]
    evaluation = recommender.info()["evaluation"]
    assert evaluation["users_evaluated"] > 2000
    assert evaluation["als"]["ndcg@10"] > evaluation["popularity"]["ndcg@10"]
    assert evaluation["als"]["precision@10"] > evaluation["popularity"]["precision@10"]


def test_data_filtering(recommender) -> None:  # type: ignore[no-untyped-def]
    info = recommender.info()
    # of 2,469 households a few bought only niche products; they get the popular fallback
    assert 2400 < info["households"] <= 2469
    assert 10_000 < info["items"] < 92_331
    reach = (recommender.trained.user_items > 0).sum(axis=0)
    assert reach.min() >= MIN_HOUSEHOLDS


def test_known_household_gets_als_items_it_has_not_bought(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    result = recommender.recommend(household, limit=10)
    assert result.strategy == "als"
    assert result.user_id == household
    assert len(result.recommendations) == 10
    bought = {item.item_id for item in recommender.history(household, limit=100)}
    assert not bought & {item.item_id for item in result.recommendations}
    scores = [item.score for item in result.recommendations]
    assert scores == sorted(scores, reverse=True)
    assert all(" - " in item.description or "(" in item.description
               for item in result.recommendations)


def test_include_purchased(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    result = recommender.recommend(household, limit=20, exclude_purchased=False)
    bought = {item.item_id for item in recommender.history(household, limit=100)}
    assert bought & {item.item_id for item in result.recommendations}


@pytest.mark.parametrize("category", ["PRODUCE", "produce", " Meat "])
def test_category_filters_by_department(recommender, household: str, category: str) -> None:  # type: ignore[no-untyped-def]
    result = recommender.recommend(household, limit=15, category=category)
    assert len(result.recommendations) == 15
    assert {item.department for item in result.recommendations} == {category.strip().upper()}


def test_history_filters_by_department(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    everything = recommender.history(household, limit=100)
    produce = recommender.history(household, limit=100, category="produce")
    assert produce and {item.department for item in produce} == {"PRODUCE"}
    assert produce == [item for item in everything if item.department == "PRODUCE"]


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
])
def test_invalid_input(recommender, kwargs: dict, field: str) -> None:  # type: ignore[no-untyped-def, type-arg]
    user_id = kwargs.pop("user_id")
    with pytest.raises(InvalidInput) as caught:
        recommender.recommend(user_id, **kwargs)
    assert caught.value.field == field


def test_batch_predict(recommender, household: str) -> None:  # type: ignore[no-untyped-def]
    liked = recommender.history(household, limit=1)[0].item_id
    queries = [RecommendQuery(household, limit=3), RecommendQuery("nobody", limit=2),
               RecommendQuery("new", items=(liked,))]
    results = recommender.predict([recommender.prepare(q) for q in queries])
    assert [r.strategy for r in results] == ["als", "popular", "fold_in"]
    assert [len(r.recommendations) for r in results] == [3, 2, 10]


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
