"""Reliability fixtures: the API fixtures, shared."""

from tests.api.conftest import client, coffee_b64, coffee_jpeg, make_client, warm_registry

__all__ = ["client", "coffee_b64", "coffee_jpeg", "make_client", "warm_registry"]
