"""Top-k ranking and its offline evaluation: a per-user holdout split and precision@k /
NDCG@k, shared by every recommender and baseline so that they are graded alike."""

from __future__ import annotations

import numpy as np
from scipy import sparse

K = 10
SEED = 42


def top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` highest finite scores, best first (ties: lower index first)."""
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    best = np.argpartition(-scores, k - 1)[:k]
    ranked: np.ndarray = best[np.argsort(-scores[best], kind="stable")]
    return ranked


def holdout_split(matrix: sparse.csr_matrix, fraction: float = 0.2,
                  seed: int = SEED) -> tuple[sparse.csr_matrix, list[np.ndarray]]:
    """Per user with at least 5 items, hide `fraction` of their distinct items:
    (the matrix without them, the hidden items of each user)."""
    rng = np.random.default_rng(seed)
    rows, cols, vals, hidden = [], [], [], []
    for user in range(matrix.shape[0]):
        start, end = matrix.indptr[user], matrix.indptr[user + 1]
        items, values = matrix.indices[start:end], matrix.data[start:end]
        order = rng.permutation(len(items))
        n_test = int(len(items) * fraction) if len(items) >= 5 else 0
        test, train = order[:n_test], order[n_test:]
        hidden.append(items[test])
        rows.append(np.full(len(train), user))
        cols.append(items[train])
        vals.append(values[train])
    train_matrix = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=matrix.shape, dtype=np.float32)
    return train_matrix, hidden


def ranking_metrics(scores: np.ndarray, train: sparse.csr_matrix, users: np.ndarray,
                    hidden: list[np.ndarray], k: int = K) -> dict[str, float]:
    """Mean precision@k and NDCG@k of `scores` (one row per entry of `users`), each user's
    training items excluded from their ranking."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision, ndcg = [], []
    for row, user in enumerate(users):
        s = scores[row].copy()
        s[train.indices[train.indptr[user]:train.indptr[user + 1]]] = -np.inf
        ranked = top(s, k)
        hits = np.isin(ranked, hidden[user])
        precision.append(hits.sum() / k)
        ideal = discounts[:min(len(hidden[user]), k)].sum()
        ndcg.append(float((hits * discounts[:len(hits)]).sum() / ideal))
    return {f"precision@{k}": round(float(np.mean(precision)), 4),
            f"ndcg@{k}": round(float(np.mean(ndcg)), 4)}
