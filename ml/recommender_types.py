"""The recommender's query and answer: what a caller sends to `/api/predict/recommend` (or
`ml.predict("recommender", ...)`) and what comes back. The spec's shape, `{"user_id",
"context": {"category"}, "limit"}` -> `{"recommendations": [{"item_id", "score", ...}]}`, is
kept; every other field has a default that keeps the earlier behaviour."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ml.limits import MAX_LIMIT, MAX_USER_ID_CHARS

MAX_PICKED = 50

Strategy = Literal["als", "popular", "fold_in", "buy_again"]
Kind = Literal["discover", "buy_again"]


class RecommendContext(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    category: Annotated[str, msgspec.Meta(
        max_length=64, description="Department filter, e.g. PRODUCE. Naming a department "
                                   "the catalogue policy leaves out (FUEL, COUPON, ...) "
                                   "lists its products.")] | None = None


class RecommendQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Whom to recommend for, which list, how many, from which department."""

    user_id: Annotated[str, msgspec.Meta(
        min_length=1, max_length=MAX_USER_ID_CHARS, examples=["1234"],
        description="Household id; unknown ids get the popular items (strategy 'popular').")]
    context: RecommendContext = msgspec.field(default_factory=RecommendContext)
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = 10
    exclude_purchased: bool = True
    items: Annotated[tuple[str, ...], msgspec.Meta(
        max_length=MAX_PICKED,
        description="Products a new household likes: recommendations fold them in instead "
                    "of a purchase history (strategy 'fold_in').")] = ()
    kind: Annotated[Kind, msgspec.Meta(
        description="Which list: 'discover', products the household does not buy yet, or "
                    "'buy_again', products it already buys, by how often and how recently "
                    "(empty for a household without a history).")] = "discover"
    per_type: Annotated[int, msgspec.Meta(
        ge=1, le=MAX_LIMIT, description="Most products of one product type (sub-commodity, "
                                        "e.g. white milk) in the list.")] = 1
    groceries_only: Annotated[bool, msgspec.Meta(
        description="Apply the catalogue policy: no fuel, coupons or unlabelled products "
                    "unless context.category names their department.")] = True


class RecommendedItem(msgspec.Struct, frozen=True):
    """One recommended product."""

    item_id: str
    score: float
    description: str
    department: str


class Recommendations(msgspec.Struct, frozen=True):
    """A ranked list for one household, and how it was made."""

    recommendations: tuple[RecommendedItem, ...]
    strategy: Strategy
    user_id: str | None
    category: str | None = None
