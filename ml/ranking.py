"""Top-k ranking and how a set of ranked lists is graded: precision@k, NDCG@k, catalogue
coverage and intra-list diversity, shared by every recommender and baseline so that they
are graded alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

K = 10
# Scores are cut into blocks of this many when the best few of a long array are wanted (see
# `largest`): numpy's partition costs ~10 ns a score, ~200 us over the 17k products.
BLOCK = 64


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` highest finite scores, best first (ties: lower index first)."""
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    best = largest(scores, k)
    ranked: np.ndarray = best[np.argsort(-scores[best], kind="stable")]
    return ranked


def top_distinct(scores: np.ndarray, groups: np.ndarray, k: int,
                 per_group: int = 1) -> np.ndarray:
    """Like `top`, but at most `per_group` indices of each group (`groups[i]` is index i's):
    an index whose group is full is skipped and the next best one taken."""
    if per_group >= k:
        return top(scores, k)
    size = len(scores)
    depth = min(size, 4 * k + 16)  # lists with many same-group leaders need a deeper look
    while True:
        best = largest(scores, depth) if depth < size else np.arange(size)
        ranked = best[np.argsort(-scores[best], kind="stable")]
        ranked = ranked[np.isfinite(scores[ranked])]
        chosen: list[int] = []
        taken: dict[int, int] = {}
        # a few dozen candidates: a plain loop beats a dozen small numpy calls
        for index, group in zip(ranked.tolist(), groups[ranked].tolist(), strict=True):
            count = taken.get(group, 0)
            if count < per_group:
                taken[group] = count + 1
                chosen.append(index)
                if len(chosen) == k:
                    break
        if len(chosen) == k or len(ranked) < depth or depth == size:
            return np.array(chosen, dtype=np.intp)
        depth = min(size, depth * 4)


def largest(scores: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` largest of `scores` (1 <= count < len), in no order, as
    `np.argpartition(-scores, count - 1)[:count]` finds them. Over a long array only the
    scores that can be among them are partitioned: the count-th largest of the blocks'
    maxima is a floor that at least `count` scores reach (those maxima), so each of the
    `count` largest is at or above it, and few others are."""
    size = len(scores)
    if size < 4 * BLOCK * count:
        return np.argpartition(-scores, count - 1)[:count]
    whole = size - size % BLOCK
    maxima = scores[:whole].reshape(-1, BLOCK).max(axis=1)
    if whole < size:
        maxima = np.append(maxima, scores[whole:].max())
    floor = -np.partition(-maxima, count - 1)[count - 1]
    if not np.isfinite(floor):  # few blocks with a score (or a NaN): the plain partition
        return np.argpartition(-scores, count - 1)[:count]
    candidates = np.flatnonzero(scores >= floor)
    chosen: np.ndarray = candidates[np.argpartition(-scores[candidates], count - 1)[:count]]
    return chosen


def grade(ranked: Sequence[np.ndarray], hidden: Sequence[np.ndarray], *, catalogue: int,
          categories: np.ndarray, k: int = K) -> dict[str, float]:
    """Figures of one list per user (`ranked[u]`, best first) against the items `hidden[u]`
    they went on to buy:
    - precision@k: hits over k, a list shorter than k included;
    - ndcg@k: discounted hits over the best possible for that user's hidden items;
    - coverage: distinct items recommended to anybody over the `catalogue` size;
    - diversity: within each list, the share of pairs of items from different
      `categories`, averaged over lists of two or more."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision, ndcg, diversity = [], [], []
    shown: set[int] = set()
    for items, wanted in zip(ranked, hidden, strict=True):
        items = np.asarray(items)[:k]
        hits = np.isin(items, wanted)
        precision.append(hits.sum() / k)
        ideal = discounts[:min(len(wanted), k)].sum()
        ndcg.append(float((hits * discounts[:len(hits)]).sum() / ideal) if ideal else 0.0)
        shown.update(items.tolist())
        if len(items) > 1:
            kinds = categories[items]
            same = int((kinds[:, None] == kinds[None, :]).sum()) - len(kinds)
            diversity.append(1.0 - same / (len(kinds) * (len(kinds) - 1)))
    return {f"precision@{k}": _mean(precision), f"ndcg@{k}": _mean(ndcg),
            "coverage": round(len(shown) / catalogue, 4) if catalogue else 0.0,
            "diversity": _mean(diversity)}


def _mean(values: list[float]) -> float:
    return round(float(np.mean(values)), 4) if values else 0.0


def best_new(scores: np.ndarray, allowed: np.ndarray, seen: np.ndarray, groups: np.ndarray,
             k: int, per_group: int = 1) -> np.ndarray:
    """The top `k` items by `scores` (one per item) that `allowed` admits and `seen` (item
    indices) does not hold, at most `per_group` of each group."""
    pool = np.where(allowed, scores, -np.inf)
    pool[seen] = -np.inf
    return top_distinct(pool, groups, k, per_group)


def best_owned(items: np.ndarray, scores: np.ndarray, allowed: np.ndarray,
               groups: np.ndarray, k: int, per_group: int = 1) -> np.ndarray:
    """Of `items` (item indices, with their `scores`), the top `k` that `allowed` admits,
    at most `per_group` of each group."""
    keep = allowed[items]
    items, scores = items[keep], scores[keep]
    chosen: np.ndarray = items[top_distinct(scores, groups[items], k, per_group)]
    return chosen
