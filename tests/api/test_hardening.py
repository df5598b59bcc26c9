"""What an attacker's requests cost and reveal, in-process: bounded error bodies, throttled
key guessing, no Host-built redirects, keyless /health, odd digits, clients that leave."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from api.app import create_app
from api.errors import MAX_MESSAGE_CHARS, bounded
from api.middleware import Auth
from api.ratelimit import TokenBuckets, client_address, networks
from ml.registry import Registry
from tests.api.conftest import service_for
from tests.api.test_routes import JSON, assert_error


@pytest.mark.parametrize(("body", "field"), [
    pytest.param(b'{"texts": [' + b",".join([b"1"] * 500_000) + b"]}", "texts.0",
                 id="half-a-million-wrong-items"),
    pytest.param(b'{"text": "hi", ' + b",".join(b'"k%d": 1' % i for i in range(100_000))
                 + b"}", "k0", id="100k-unknown-keys"),
    pytest.param(b'{"text": "hi", "' + b"k" * 500_000 + b'": 1}', None, id="500k-key-name"),
])
def test_refusing_a_hostile_body_is_cheap_and_says_little(client, body: bytes,  # type: ignore[no-untyped-def]
                                                          field: str | None) -> None:
    path = "/api/predict/batch" if body.startswith(b'{"texts"') else "/api/predict/sentiment"
    started = time.perf_counter()
    response = client.post(path, content=body, headers=JSON)
    elapsed = time.perf_counter() - started
    error = assert_error(response, 422, "validation_error")
    assert len(response.content) < 2048
    assert len(error["details"]["errors"]) == 1  # decoding stops at the first problem
    if field is not None:
        assert error["details"]["errors"][0]["field"] == field
    assert elapsed < 2.0, elapsed  # pydantic took 2.6 s and 70 MB for 800k keys


def test_bounded_cuts_strings_and_lists() -> None:
    long = "x" * 10_000
    assert len(bounded(long)) < MAX_MESSAGE_CHARS + 40
    assert bounded(list(range(100)))[-1] == "... and 90 more"
    assert bounded({"valid": [long] * 50})["valid"][0].endswith("(10000 chars)")
    assert bounded(7) == 7


def test_an_unknown_category_echo_is_bounded(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/api/predict/recommend",
                           json={"user_id": "1", "context": {"category": "Z" * 60}})
    error = assert_error(response, 422, "invalid_input")
    assert len(error["details"]["valid"]) <= 11  # ten departments, then a count


def test_wrong_keys_are_throttled_per_client(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(api_keys=("s3cret-key",), auth_failure_burst=5)
    codes = [client.get("/api/models", headers={"x-api-key": f"guess-{i}"}).status_code
             for i in range(12)]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
    throttled = client.get("/api/models", headers={"x-api-key": "guess-x"})
    error = assert_error(throttled, 429, "too_many_failed_keys")
    assert int(throttled.headers["retry-after"]) >= 1
    assert error["details"]["retry_after_s"] >= 1
    # the throttle is per client: guessing stops being checked at all, right keys too
    assert client.get("/api/models", headers={"x-api-key": "s3cret-key"}).status_code == 429


def test_keys_are_compared_in_constant_time_against_every_key() -> None:
    calls: list[tuple[bytes, bytes]] = []

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return a == b

    auth = Auth(keys=("k-one", "k-two", "k-three"), compare=recording)
    assert auth.matches(b"k-one")
    assert [b for _, b in calls] == [b"k-one", b"k-two", b"k-three"]  # no early exit
    assert Auth(keys=("k",)).compare.__name__ == "compare_digest"


def test_no_redirect_is_built_from_the_host_header(client) -> None:  # type: ignore[no-untyped-def]
    for path in ("/api/models/", "/health/", "/metrics/"):
        response = client.get(path, headers={"host": "evil.example"}, follow_redirects=False)
        assert response.status_code == 404, (path, response.status_code)
        assert "location" not in response.headers


def test_health_shows_memory_only_with_a_key(make_client) -> None:  # type: ignore[no-untyped-def]
    keyed = make_client(api_keys=("s3cret-key",))
    stranger = keyed.get("/health").json()
    assert "memory" not in stranger and stranger["status"] == "healthy"
    with_key = keyed.get("/health", headers={"x-api-key": "s3cret-key"}).json()
    assert with_key["memory"]["rss_mb"] > 100
    wrong_key = keyed.get("/health", headers={"x-api-key": "nope"}).json()
    assert "memory" not in wrong_key
    open_server = make_client().get("/health").json()  # no keys configured: all shown
    assert "memory" in open_server


@pytest.mark.parametrize("value", ["²", "１０", "٣", "1e3", " 5 0 "])
def test_non_ascii_digits_in_the_deadline_header_are_a_400(client, value: str) -> None:  # type: ignore[no-untyped-def]
    raw = value.encode("latin-1") if max(map(ord, value)) < 256 else value.encode()
    response = client.post("/api/predict/sentiment", json={"text": "hi"},
                           headers={"x-request-timeout-ms": raw})  # "²" is byte 0xb2
    assert_error(response, 400, "invalid_timeout")


@pytest.mark.parametrize("value", ["²", "３", "five"])
def test_non_ascii_digits_in_a_form_field_are_a_422(client, coffee_jpeg: bytes,  # type: ignore[no-untyped-def]
                                                    value: str) -> None:
    response = client.post("/api/predict/image", files={"image": ("c.jpg", coffee_jpeg)},
                           data={"top_k": value})
    error = assert_error(response, 422, "validation_error")
    assert error["details"]["errors"][0]["field"] == "top_k"


def test_a_client_that_leaves_mid_body_is_a_499_not_an_error(
        warm_registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    service = service_for(warm_registry, rate_limit_per_second=0.0)
    app = create_app(service=service)
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "http.request", "body": b'{"text": ', "more_body": True},
                     {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/predict/sentiment",
             "raw_path": b"/api/predict/sentiment", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "scheme": "http",
             "http_version": "1.1", "state": {}}
    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert service.http_metrics.snapshot()["requests"]["by_status"] == {"499": 1}


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "expected"), [
    pytest.param("127.0.0.1", "203.0.113.9", (), "127.0.0.1", id="loopback-not-trusted"),
    pytest.param("10.0.0.5", "203.0.113.9", ("10.0.0.0/8",), "203.0.113.9", id="trusted"),
    pytest.param("10.0.0.5", "203.0.113.9, 10.0.0.7", ("10.0.0.0/8",), "203.0.113.9",
                 id="through-two-of-ours"),
])
def test_client_address(peer: str, forwarded: str, trusted: tuple[str, ...],
                        expected: str) -> None:
    scope = {"client": (peer, 1), "headers": [(b"x-forwarded-for", forwarded.encode())]}
    assert client_address(scope, networks(trusted)) == expected


def test_token_buckets_refill_and_stay_bounded_in_keys() -> None:
    buckets = TokenBuckets(rate=100.0, burst=2, max_keys=10)
    assert [buckets.take("a") for _ in range(3)][:2] == [0.0, 0.0]
    assert buckets.take("a") > 0
    time.sleep(0.03)
    assert buckets.take("a") == 0.0  # refilled at 100/s
    for i in range(50):
        buckets.take(f"k{i}")
    assert len(buckets._tokens) <= 10
    assert TokenBuckets(rate=0, burst=1).take("x") == 0.0  # off


def test_no_command_we_start_lets_uvicorn_believe_forwarded_headers() -> None:
    """uvicorn's --proxy-headers believes X-Forwarded-For from any loopback client; the
    API judges it from ML_TRUSTED_PROXIES alone."""
    from pathlib import Path

    from api.workers import parse
    from benchmarks.services import SERVING_FLAGS, command, command_env

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    assert "--no-proxy-headers" in makefile.split("SERVING_FLAGS :=")[1].split("\n\n")[0]
    assert "--no-proxy-headers" in SERVING_FLAGS
    for mode in ("one-process", "api", "hop", "fastapi-peer"):
        assert "--no-proxy-headers" in command(mode, 8000), mode
    for mode in ("ui-only", "streamlit-run"):  # no flag there: trust nobody by environment
        assert command_env(mode) == {"FORWARDED_ALLOW_IPS": ""}, mode
    options, _ = parse(["--workers", "2"])
    assert options.proxy_headers is False and options.config().proxy_headers is False
