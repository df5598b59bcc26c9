"""How the recommender's two lists are graded, on the weeks after the ones it learns from.

The year's last HOLDOUT_WEEKS weeks are held out; models learn from the weeks before. Each
household's held-out purchases split in two:
- "Discover": products it had not bought before. Every model ranks the products the
  household had not bought (ALS against popularity);
- "Buy again": products it had bought before. Models rank what it had bought (recency-
  weighted purchases against plain purchase counts).
Every model is held to the served rules: only groceries under the catalogue policy are
candidates or targets, and a list holds one product per product type. Figures: precision@10,
NDCG@10, catalogue coverage, intra-list diversity (`ml.ranking.grade`).

`python -m ml.recommender_comparison` grades every model that was tried (the README's table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from ml.grocery import (
    MIN_HOUSEHOLDS,
    Interactions,
    Products,
    describe_products,
    interactions,
    reach,
)
from ml.ranking import K, best_new, best_owned, grade

if TYPE_CHECKING:
    import pandas as pd

HOLDOUT_WEEKS = 8
CHUNK = 256  # households scored at once

Scorer = Callable[[np.ndarray], np.ndarray]  # household rows -> one score per product each
Fit = Callable[[sparse.csr_matrix], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Holdout:
    """What models learn from, and what each household went on to buy."""

    data: Interactions                          # the weeks before the holdout
    products: Products
    first_week: int                             # the first held-out week
    discover: list[tuple[int, np.ndarray]]      # (row, products new to it it then bought)
    buy_again: list[tuple[int, np.ndarray]]     # (row, products it bought again)


def holdout(purchases: pd.DataFrame, weeks: int = HOLDOUT_WEEKS,
            describe: Callable[[np.ndarray], Products] = describe_products,
            min_households: int = MIN_HOUSEHOLDS) -> Holdout:
    """Split `purchases` at its last `weeks` weeks (see the module docstring); the products
    are those `min_households` households bought before the split."""
    first = int(purchases["week"].max()) - weeks + 1
    data = interactions(purchases[purchases["week"] < first], min_households=min_households)
    products = describe(data.items)
    later = purchases[(purchases["week"] >= first)
                      & purchases["household_id"].isin(data.users)
                      & purchases["product_id"].isin(data.items)]
    rows = np.searchsorted(data.users, later["household_id"].to_numpy())
    columns = np.searchsorted(data.items, later["product_id"].to_numpy())
    bought_later = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, columns)),
                                     shape=data.counts.shape)
    bought_later.sum_duplicates()
    counts, grocery = data.counts, products.grocery
    discover, again = [], []
    for row in range(counts.shape[0]):
        wanted = bought_later.indices[bought_later.indptr[row]:bought_later.indptr[row + 1]]
        wanted = np.sort(wanted[grocery[wanted]])
        before = counts.indices[counts.indptr[row]:counts.indptr[row + 1]]
        new, known = np.setdiff1d(wanted, before), np.intersect1d(wanted, before)
        if len(new):
            discover.append((row, new))
        if len(known):
            again.append((row, known))
    return Holdout(data, products, first, discover, again)


def grade_discover(split: Holdout, score: Scorer, per_type: int = 1) -> dict[str, float]:
    """Figures of a model's Discover lists: new groceries only, as served."""
    counts, products = split.data.counts, split.products
    allowed = products.grocery
    ranked = []
    for start in range(0, len(split.discover), CHUNK):
        rows = np.array([row for row, _ in split.discover[start:start + CHUNK]])
        for row, scores in zip(rows, score(rows), strict=True):
            seen = counts.indices[counts.indptr[row]:counts.indptr[row + 1]]
            ranked.append(best_new(np.asarray(scores), allowed, seen, products.kinds, K,
                                   per_type))
    return grade(ranked, [wanted for _, wanted in split.discover],
                 catalogue=int(products.grocery.sum()), categories=products.categories)


def grade_buy_again(split: Holdout, scores: sparse.csr_matrix,
                    per_type: int = 1) -> dict[str, float]:
    """Figures of Buy again lists ranked by `scores` (one per product a household bought)."""
    products = split.products
    allowed = products.grocery
    ranked = [best_owned(scores.indices[scores.indptr[row]:scores.indptr[row + 1]],
                         scores.data[scores.indptr[row]:scores.indptr[row + 1]],
                         allowed, products.kinds, K, per_type)
              for row, _ in split.buy_again]
    return grade(ranked, [wanted for _, wanted in split.buy_again],
                 catalogue=int(products.grocery.sum()), categories=products.categories)


def evaluate(purchases: pd.DataFrame, *, fit: Fit,
             describe: Callable[[np.ndarray], Products] = describe_products,
             weeks: int = HOLDOUT_WEEKS, min_households: int = MIN_HOUSEHOLDS
             ) -> dict[str, Any]:
    """The model card's figures: each served list against its baseline (`fit`: the
    Discover model's training, household and product factors from purchase counts)."""
    split = holdout(purchases, weeks, describe, min_households)
    users, items = fit(split.data.counts)
    pop = reach(split.data.counts)
    figures = {
        "als": grade_discover(split, lambda rows: users[rows] @ items.T),
        "popularity": grade_discover(split, lambda rows: np.broadcast_to(
            pop, (len(rows), len(pop)))),
        "recency_frequency": grade_buy_again(split, split.data.recent),
        "frequency": grade_buy_again(split, split.data.counts),
    }
    last = split.first_week + weeks - 1
    return {
        "protocol": f"learn from weeks 1-{split.first_week - 1}, grade on the purchases of "
                    f"weeks {split.first_week}-{last}; candidates and targets are groceries "
                    "under the catalogue policy, one product per type in every list",
        "lists": "als and popularity rank Discover (held-out products new to the household, "
                 "among products it had not bought); recency_frequency and frequency rank "
                 "Buy again (held-out products it had bought before, among those)",
        "households": {"discover": len(split.discover), "buy_again": len(split.buy_again)},
        **figures,
        "lift": {"discover ndcg@10": _ratio(figures["als"], figures["popularity"]),
                 "buy_again ndcg@10": _ratio(figures["recency_frequency"],
                                             figures["frequency"])},
    }


def _ratio(model: dict[str, float], baseline: dict[str, float]) -> float:
    return round(model["ndcg@10"] / baseline["ndcg@10"], 2) if baseline["ndcg@10"] else 0.0
