"""Every recommender that was tried for the two lists, graded alike: `python -m
ml.recommender_comparison` prints the README's table (a minute or two on two cores).

Models are fitted on the weeks before a split and graded on the weeks after it with the
served rules (`ml.recommender_evaluation`). Hyperparameters were picked on the earlier split
(weeks 38-45 held out, nothing later seen) and are reported on the later one (46-53)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

import numpy as np
from scipy import sparse

from ml.grocery import interactions, load_purchases, reach
from ml.ranking import K
from ml.recommender_evaluation import (
    HOLDOUT_WEEKS,
    Holdout,
    Scorer,
    grade_buy_again,
    grade_discover,
    holdout,
)
from ml.recommender_training import confidence, fit_als

if TYPE_CHECKING:
    import pandas as pd

Discover = Callable[[Holdout], Scorer]
BuyAgain = Callable[[Holdout, "pd.DataFrame"], sparse.csr_matrix]


def als(**params: object) -> Discover:
    def make(split: Holdout) -> Scorer:
        users, items = fit_als(split.data.counts, **params)  # type: ignore[arg-type]
        return lambda rows: users[rows] @ items.T
    return make


def popularity(split: Holdout) -> Scorer:
    pop = reach(split.data.counts)
    return lambda rows: np.broadcast_to(pop, (len(rows), len(pop)))


def item_knn(kind: str, neighbours: int) -> Discover:
    def make(split: Holdout) -> Scorer:
        from implicit import nearest_neighbours

        model = getattr(nearest_neighbours, kind)(K=neighbours)
        weights = confidence(split.data.counts)
        with warnings.catch_warnings():  # implicit converts its own transpose, and says so
            warnings.simplefilter("ignore")
            model.fit(weights, show_progress=False)
        similar = model.similarity.tocsr()
        return lambda rows: (weights[rows] @ similar).toarray()
    return make


def ease(penalty: float, min_households: int) -> Discover:
    """EASE (Steck 2019) on the products at least `min_households` bought (a dense item x
    item solve: the whole catalogue does not fit this machine's time)."""
    def make(split: Holdout) -> Scorer:
        keep = np.flatnonzero(reach(split.data.counts) >= min_households)
        weights = confidence(split.data.counts)[:, keep]
        gram = (weights.T @ weights).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += penalty
        inverse = np.linalg.inv(gram)
        b = (inverse / -np.diag(inverse)).astype(np.float32)
        np.fill_diagonal(b, 0.0)

        def score(rows: np.ndarray) -> np.ndarray:
            out = np.full((len(rows), split.data.counts.shape[1]), -np.inf,
                          dtype=np.float32)
            out[:, keep] = weights[rows] @ b
            return out
        return score
    return make


def bm25(counts: sparse.csr_matrix) -> sparse.csr_matrix:
    from implicit.nearest_neighbours import bm25_weight

    weighted: sparse.csr_matrix = bm25_weight(counts, K1=100, B=0.8).tocsr()
    return weighted


DISCOVER: dict[str, Discover] = {
    "popularity (baseline)": popularity,
    "ALS 32 factors, reg 10, alpha 1 (served)": als(),
    "ALS 32 factors, reg 100, alpha 5 (served before)": als(regularization=100.0, alpha=5.0),
    "ALS 64 factors, reg 10, alpha 1": als(factors=64),
    "ALS 128 factors, reg 30, alpha 1": als(factors=128, regularization=30.0),
    "ALS 32 factors, reg 10, alpha 20": als(alpha=20.0),
    "ALS 32 factors, reg 10, alpha 1, 30 iterations": als(iterations=30),
    "ALS on BM25 weights, 64 factors, reg 100, alpha 1": als(factors=64, regularization=100.0,
                                                             weighting=bm25),
    "item-item cosine, 50 neighbours": item_knn("CosineRecommender", 50),
    "item-item TF-IDF, 50 neighbours": item_knn("TFIDFRecommender", 50),
    "item-item BM25, 200 neighbours": item_knn("BM25Recommender", 200),
    "EASE, lambda 1000, products of >= 40 households": ease(1000.0, 40),
}

BUY_AGAIN: dict[str, BuyAgain] = {
    "frequency (baseline)": lambda split, before: split.data.counts,
    "recency-weighted purchases, 32 weeks (served)": lambda split, before: split.data.recent,
    "recency-weighted purchases, 8 weeks": lambda split, before: interactions(
        before, recency_weeks=8.0).recent,
    "recency-weighted purchases, 128 weeks": lambda split, before: interactions(
        before, recency_weeks=128.0).recent,
}


def compare(purchases: pd.DataFrame, out: TextIO, last_week: int | None = None) -> None:
    """Grade every model on the split whose held-out weeks end at `last_week`."""
    if last_week is not None:
        purchases = purchases[purchases["week"] <= last_week]
    split = holdout(purchases)
    before = purchases[purchases["week"] < split.first_week]
    end = split.first_week + HOLDOUT_WEEKS - 1
    out.write(f"\nHeld out: weeks {split.first_week}-{end}; Discover households "
              f"{len(split.discover)}, Buy again households {len(split.buy_again)}\n\n"
              f"| list | model | precision@{K} | NDCG@{K} | coverage | diversity | lift |\n"
              "|---|---|---|---|---|---|---|\n")
    rows = [("Discover", name, grade_discover(split, make(split)))
            for name, make in DISCOVER.items()]
    rows += [("Buy again", name, grade_buy_again(split, make(split, before)))
             for name, make in BUY_AGAIN.items()]
    baselines = {title: figures[f"ndcg@{K}"] for title, name, figures in rows
                 if "(baseline)" in name}
    for title, name, figures in rows:
        out.write(f"| {title} | {name} | " + " | ".join(f"{v:.4f}" for v in figures.values())
                  + f" | {figures[f'ndcg@{K}'] / baselines[title]:.2f}x |\n")

if __name__ == "__main__":
    from ml.threads import single_threaded_blas

    single_threaded_blas()
    everything = load_purchases()
    compare(everything, sys.stdout, last_week=int(everything["week"].max()) - HOLDOUT_WEEKS)
    compare(everything, sys.stdout)
