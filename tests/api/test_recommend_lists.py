"""The recommend route with the two lists and the catalogue policy: the spec's body and answer
are unchanged, the new query fields arrive through the same route and schema."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

ROUTE = "/api/predict/recommend"


def post(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post(ROUTE, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_the_spec_body_gets_the_spec_answer(client: TestClient, recommender) -> None:  # type: ignore[no-untyped-def]
    user = recommender.known_users()[5]
    body = post(client, user_id=user, context={"category": "produce"}, limit=5)
    assert {"recommendations", "latency_ms"} <= set(body)
    assert len(body["recommendations"]) == 5
    assert all({"item_id", "score"} <= set(item) for item in body["recommendations"])
    assert body["strategy"] == "als"  # Discover, as before
    assert [i["item_id"] for i in body["recommendations"]] == [
        i.item_id for i in recommender.recommend(user, limit=5, category="produce")
        .recommendations]


def test_buy_again_over_http(client: TestClient, recommender) -> None:  # type: ignore[no-untyped-def]
    user = recommender.known_users()[5]
    body = post(client, user_id=user, kind="buy_again", limit=8)
    assert body["strategy"] == "buy_again"
    ids = [i["item_id"] for i in body["recommendations"]]
    assert ids and min(recommender.times_bought(user, ids)) > 0


def test_the_policy_and_per_type_over_http(client: TestClient) -> None:
    plain = post(client, user_id="nobody", limit=30)
    loose = post(client, user_id="nobody", limit=30, groceries_only=False, per_type=30)
    assert "FUEL" not in {i["department"] for i in plain["recommendations"]}
    assert "FUEL" in {i["department"] for i in loose["recommendations"]}
    fuel = post(client, user_id="nobody", context={"category": "FUEL"})
    assert {i["department"] for i in fuel["recommendations"]} == {"FUEL"}


@pytest.mark.parametrize(("body", "field"), [
    pytest.param({"user_id": "1", "kind": "impulse"}, "kind", id="unknown-kind"),
    pytest.param({"user_id": "1", "per_type": 0}, "per_type", id="zero-per-type"),
    pytest.param({"user_id": "1", "groceries_only": "yes"}, "groceries_only", id="not-a-bool"),
])
def test_bad_list_options_are_422_naming_the_field(client: TestClient, body: dict[str, Any],
                                                   field: str) -> None:
    response = client.post(ROUTE, json=body)
    assert response.status_code == 422, response.text
    assert field in response.text


def test_openapi_documents_the_list_options(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    text = str(spec)
    for words in ("buy_again", "per_type", "groceries_only", "catalogue policy"):
        assert words in text, words
