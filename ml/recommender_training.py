"""Training the recommender: implicit ALS on the grocery purchases, evaluated on a holdout
against a popularity baseline. What it returns is the artifact `ml.recommender` serves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from ml.grocery import describe_products, load_interactions
from ml.ranking import holdout_split, ranking_metrics
from ml.threads import single_threaded_blas

CODE_VERSION = "3"  # bump when training or the artifact's type changes: caches rebuild
FACTORS = 32
REGULARIZATION = 100.0
ALPHA = 5.0
ITERATIONS = 15
SEED = 42


@dataclass(frozen=True)
class TrainedRecommender:
    """What training produces and the artifact cache stores."""

    user_ids: np.ndarray          # household id per matrix row
    item_ids: np.ndarray          # product id per matrix column
    user_items: sparse.csr_matrix  # log1p(purchase count)
    user_factors: np.ndarray
    item_factors: np.ndarray
    popularity: np.ndarray        # households that bought each item
    descriptions: np.ndarray
    departments: np.ndarray
    evaluation: dict[str, Any] = field(default_factory=dict)


def fit_als(matrix: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors of an implicit ALS model fitted to `matrix`."""
    from implicit.cpu.als import AlternatingLeastSquares

    # implicit parallelises itself; a multi-threaded BLAS underneath only oversubscribes.
    single_threaded_blas()
    model = AlternatingLeastSquares(factors=FACTORS, regularization=REGULARIZATION,
                                    alpha=ALPHA, iterations=ITERATIONS, random_state=SEED)
    model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


def evaluate(matrix: sparse.csr_matrix) -> dict[str, Any]:
    """Holdout evaluation of ALS against a popularity baseline."""
    train, hidden = holdout_split(matrix)
    user_factors, item_factors = fit_als(train)
    popularity = np.diff(train.tocsc().indptr).astype(np.float32)
    users = np.array([u for u in range(matrix.shape[0]) if len(hidden[u])])
    als: dict[str, list[tuple[float, int]]] = {}
    popular: dict[str, list[tuple[float, int]]] = {}
    for chunk in np.array_split(users, max(1, len(users) // 256)):
        als_scores = user_factors[chunk] @ item_factors.T
        pop_scores = np.broadcast_to(popularity, (len(chunk), len(popularity)))
        for target, scores in ((als, als_scores), (popular, pop_scores)):
            # rows of the chunk's own users, so each ranking skips that user's purchases
            for key, value in ranking_metrics(scores, train[chunk], np.arange(len(chunk)),
                                              [hidden[u] for u in chunk]).items():
                target.setdefault(key, []).append((value, len(chunk)))

    def mean(table: dict[str, list[tuple[float, int]]]) -> dict[str, float]:
        return {k: round(sum(v * n for v, n in rows) / sum(n for _, n in rows), 4)
                for k, rows in table.items()}
    return {"protocol": "per-household 80/20 holdout of distinct products (seed 42, households "
                        "with >= 5 products), seen products excluded",
            "users_evaluated": len(users), "als": mean(als), "popularity": mean(popular)}


def train() -> TrainedRecommender:
    """Fit the served model on all interactions, evaluate on a holdout split."""
    matrix, users, items = load_interactions()
    user_factors, item_factors = fit_als(matrix)
    descriptions, departments = describe_products(items)
    return TrainedRecommender(
        user_ids=users, item_ids=items, user_items=matrix, user_factors=user_factors,
        item_factors=item_factors, popularity=np.diff(matrix.tocsc().indptr).astype(np.float32),
        descriptions=descriptions, departments=departments, evaluation=evaluate(matrix))
