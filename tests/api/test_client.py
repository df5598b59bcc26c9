"""The typed client against the real app (in-process ASGI transport via TestClient)."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from api.client import ApiClientError, Client


@pytest.fixture
def api(client: TestClient) -> Client:
    # TestClient is an httpx2 client; give our httpx client a transport that forwards to it.
    import httpx

    def forward(request: httpx.Request) -> httpx.Response:
        response = client.request(request.method, str(request.url.raw_path, "ascii"),
                                  content=request.content, headers=dict(request.headers))
        return httpx.Response(response.status_code, headers=dict(response.headers),
                              content=response.content)

    return Client("http://testserver", transport=httpx.MockTransport(forward))


def test_predictions(api: Client, coffee_jpeg: bytes) -> None:
    assert api.sentiment("I love it", detailed=True).probabilities is not None
    assert api.batch(["good", "bad"]).count == 2
    assert api.image(coffee_jpeg, top_k=2).predictions[0].label == "espresso"
    assert api.image(coffee_jpeg, upload=True).predictions[0].label == "espresso"
    assert api.recommend("nobody").strategy == "popular"


def test_operations(api: Client) -> None:
    assert api.health().status == "healthy"
    assert api.ready()
    assert {m.name for m in api.models().models} == {"sentiment", "image", "recommender",
                                                     "wine"}
    assert api.metrics().requests is not None


def test_errors_raise_with_code_and_request_id(api: Client) -> None:
    with pytest.raises(ApiClientError) as caught:
        api.sentiment("   ")
    assert caught.value.status == 422
    assert caught.value.code == "invalid_input"
    assert caught.value.request_id
