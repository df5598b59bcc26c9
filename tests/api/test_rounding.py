"""Floats in answers are rounded for people (ML_RESPONSE_DIGITS), every model alike."""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec
import pytest

from api.rounding import rounder, significant
from tests.api.conftest import ClientFactory


@pytest.mark.parametrize(("value", "digits", "expected"), [
    pytest.param(0.9726619523305536, 4, 0.9727, id="probability"),
    pytest.param(-0.9551787251865458, 4, -0.9552, id="negative"),
    pytest.param(1.7483227144007844e-05, 4, 1.748e-05, id="tiny-keeps-its-digits"),
    pytest.param(123456.78, 4, 123457.0, id="integer-part-kept"),
    pytest.param(0.0, 4, 0.0, id="zero"),
    pytest.param(0.9726619523305536, 6, 0.972662, id="six-digits"),
])
def test_significant_digits(value: float, digits: int, expected: float) -> None:
    assert significant(value, digits) == expected


def test_non_finite_values_pass_through() -> None:
    assert math.isnan(significant(math.nan, 4))
    assert significant(math.inf, 4) == math.inf


class Term(msgspec.Struct):
    term: str
    weight: float


class Nested(msgspec.Struct):
    label: str
    confidence: Annotated[float, msgspec.Meta(ge=0)]
    count: int
    maybe: float | None
    by_class: dict[str, float]
    terms: list[Term]
    best: Term | None = None


def test_every_float_in_a_result_type_is_rounded_and_nothing_else() -> None:
    value = Nested("cat", 0.38572442531585693, 7, None, {"a": 0.017483227144007844},
                   [Term("love", 2.474251), Term("it", -0.578123)], Term("x", 1 / 3))
    rounded = rounder(Nested, 4)
    assert rounded is not None
    assert rounded(value) == Nested("cat", 0.3857, 7, None, {"a": 0.01748},
                                    [Term("love", 2.474), Term("it", -0.5781)],
                                    Term("x", 0.3333))
    assert rounded(msgspec.structs.replace(value, maybe=2 / 3)).maybe == 0.6667


def test_types_without_floats_and_zero_digits_get_no_rounder() -> None:
    class Words(msgspec.Struct):
        words: list[str]
    assert rounder(Words, 4) is None
    assert rounder(Nested, 0) is None


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


def _digits(value: float) -> int:
    """Significant digits after the integer part's (what rounding bounds)."""
    text = repr(abs(value))
    if "e" in text:
        return len(text.split("e")[0].replace(".", "").lstrip("0"))
    whole, _, fraction = text.partition(".")
    return len((whole.lstrip("0") + fraction).lstrip("0").rstrip("0")) if whole == "0" \
        else len(whole)


@pytest.mark.parametrize("path", ["/api/predict/sentiment", "/api/predict/batch"])
def test_answers_over_http_are_rounded_and_the_setting_turns_it_off(
        make_client: ClientFactory, path: str) -> None:
    body: dict[str, Any] = ({"text": "I love it, though the battery is weak",
                             "options": {"detailed": True}}
                            if path.endswith("sentiment") else
                            {"texts": ["I love it", "awful service"]})
    rounded = make_client(rate_limit_per_second=0.0).post(path, json=body).json()
    full = make_client(rate_limit_per_second=0.0, response_digits=0).post(path, json=body)
    floats = [f for k, v in rounded.items() if k != "latency_ms" for f in _floats(v)]
    assert floats and all(_digits(f) <= 4 for f in floats), floats
    unrounded = [f for k, v in full.json().items() if k != "latency_ms" for f in _floats(v)]
    assert any(_digits(f) > 4 for f in unrounded), unrounded
    assert all(math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4)
               for a, b in zip(floats, unrounded, strict=True))


def test_image_and_recommendation_answers_are_rounded(make_client: ClientFactory,
                                                      coffee_b64: str) -> None:
    client = make_client(rate_limit_per_second=0.0)
    image = client.post("/api/predict/image", json={"image_base64": coffee_b64, "top_k": 5})
    recs = client.post("/api/predict/recommend", json={"user_id": "1", "limit": 5})
    floats = _floats(image.json()["predictions"]) + _floats(recs.json()["recommendations"])
    assert len(floats) == 10 and all(_digits(f) <= 4 for f in floats), floats
