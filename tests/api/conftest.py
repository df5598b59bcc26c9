"""API fixtures: apps over the session's real, already-loaded registry."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.service import Service
from ml.config import Settings
from ml.registry import Registry
from tests.conftest import encoded, photo

ClientFactory = Callable[..., TestClient]


@pytest.fixture(scope="session")
def warm_registry(registry: Registry) -> Registry:
    registry.warmup()
    return registry


@pytest.fixture
def make_client(warm_registry: Registry) -> Iterator[ClientFactory]:
    """Build a TestClient (lifespan on) for an app with some settings changed."""
    clients: list[TestClient] = []

    def make(registry: Registry | None = None, wait: bool = True, **changes: Any) -> TestClient:
        reg = registry or warm_registry
        settings = reg.settings.replace(**changes)
        service = Service(settings, reg)
        client = TestClient(create_app(service=service), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        if wait:
            assert service.wait_ready(60), "warm-up did not finish"
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    """The API with default settings (no auth, generous rate limit)."""
    return make_client(rate_limit_per_second=0.0)


@pytest.fixture(scope="session")
def coffee_jpeg() -> bytes:
    return encoded(photo("coffee"), "JPEG", quality=90)


@pytest.fixture(scope="session")
def coffee_b64(coffee_jpeg: bytes) -> str:
    return base64.b64encode(coffee_jpeg).decode()


def settings_for(registry: Registry, **changes: Any) -> Settings:
    return registry.settings.replace(**changes)
