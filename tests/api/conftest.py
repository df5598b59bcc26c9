"""API fixtures: apps over the session's real, already-loaded registry."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.config import ApiSettings
from api.service import Service
from ml.config import Settings
from ml.engine import Engine
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
        service = service_for(reg, **changes)
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


def split(changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Setting changes for the ml core and for the HTTP layer, by which one has the field."""
    ml = {k: v for k, v in changes.items() if k in Settings.__dataclass_fields__}
    http = {k: v for k, v in changes.items() if k in ApiSettings.__dataclass_fields__}
    unknown = set(changes) - set(ml) - set(http)
    assert not unknown, f"no such settings: {unknown}"
    return ml, http


def service_for(registry: Registry, **changes: Any) -> Service:
    """A service with an engine of its own over `registry`, some settings changed
    (`tuned={"sentiment": {"max_batch": 2}}` sets batcher limits)."""
    tuned = changes.pop("tuned", {})
    ml, http = split(changes)
    settings = registry.settings.replace(**ml)
    for model, limits in tuned.items():
        settings = settings.tuned(model, **limits)
    return Service(ApiSettings().replace(**http), Engine(registry, settings=settings),
                   owns_engine=True)
