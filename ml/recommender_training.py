"""Training the recommender: implicit ALS on the grocery purchases for "Discover", recency-
weighted purchase counts for "Buy again", both evaluated on the year's last weeks
(`ml.recommender_evaluation`). What `train` returns is the artifact `ml.recommender` serves.

The hyperparameters were chosen on an earlier split (weeks 1-37 to learn, 38-45 to check)
and are reported on the later one (1-45, 46-53); the README lists what else was tried."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from ml.grocery import describe_products, interactions, load_purchases, reach
from ml.recommender_evaluation import evaluate
from ml.threads import single_threaded_blas

if TYPE_CHECKING:
    import pandas as pd

CODE_VERSION = "5"  # bump when training or the artifact's type changes: caches rebuild
FACTORS = 32
REGULARIZATION = 10.0
ALPHA = 1.0
ITERATIONS = 15
SEED = 42


@dataclass(frozen=True)
class TrainedRecommender:
    """What training produces and the artifact cache stores."""

    user_ids: np.ndarray           # household id per matrix row
    item_ids: np.ndarray           # product id per matrix column
    user_items: sparse.csr_matrix  # purchases per household and product
    recent: sparse.csr_matrix      # the same, each purchase weighted by its recency
    user_factors: np.ndarray
    item_factors: np.ndarray
    popularity: np.ndarray         # households that bought each product
    descriptions: np.ndarray
    departments: np.ndarray
    kinds: np.ndarray              # product type (sub-commodity) code per product
    categories: np.ndarray         # product category (commodity) code per product
    exclusions: np.ndarray         # why the catalogue policy leaves it out ("": it does not)
    evaluation: dict[str, Any] = field(default_factory=dict)


def confidence(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    """What ALS is fitted to: log(1 + purchases), so a weekly staple does not drown out the
    rest of the basket (the model's confidence is then 1 + ALPHA times this)."""
    weights = counts.copy()
    weights.data = np.log1p(weights.data)
    return weights


def fit_als(counts: sparse.csr_matrix, *, factors: int = FACTORS,
            regularization: float = REGULARIZATION, alpha: float = ALPHA,
            iterations: int = ITERATIONS,
            weighting: Callable[[sparse.csr_matrix], sparse.csr_matrix] = confidence,
            ) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors of an implicit ALS model fitted to the purchase `counts`
    (weighted by `weighting`)."""
    from implicit.cpu.als import AlternatingLeastSquares

    # implicit parallelises itself; a multi-threaded BLAS underneath only oversubscribes.
    single_threaded_blas()
    model = AlternatingLeastSquares(factors=factors, regularization=regularization,
                                    alpha=alpha, iterations=iterations, random_state=SEED)
    model.fit(weighting(counts).tocsr(), show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


def train(purchases: pd.DataFrame | None = None) -> TrainedRecommender:
    """Fit the served model on every purchase; evaluate on the last weeks held out."""
    purchases = load_purchases() if purchases is None else purchases
    data = interactions(purchases)
    user_factors, item_factors = fit_als(data.counts)
    products = describe_products(data.items)
    return TrainedRecommender(
        user_ids=data.users, item_ids=data.items, user_items=data.counts, recent=data.recent,
        user_factors=user_factors, item_factors=item_factors,
        popularity=reach(data.counts), descriptions=products.descriptions,
        departments=products.departments, kinds=products.kinds,
        categories=products.categories, exclusions=products.exclusions,
        evaluation=evaluate(purchases, fit=fit_als))
