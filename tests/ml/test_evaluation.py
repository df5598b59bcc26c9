"""The evaluation code itself, on toy cases worked out by hand: top-k ranking, the holdout
split and precision@k / NDCG@k that grade ALS and the popularity baseline alike, and the
sentiment model's accuracy, macro-F1, per-class figures and confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from scipy import sparse

from ml import sentiment_training
from ml.ranking import holdout_split, ranking_metrics, top

# -- top-k ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("scores", "k", "expected"), [
    pytest.param([2.0, 5.0, 5.0, 1.0], 3, [1, 2, 0], id="ties-lower-index-first"),
    pytest.param([2.0, -np.inf, 3.0, 1.0], 10, [2, 0, 3], id="excluded-never-ranked"),
    pytest.param([-np.inf, -np.inf], 2, [], id="nothing-rankable"),
    pytest.param([0.5, 0.1, 0.9], 0, [], id="k-zero"),
])
def test_top_ranks_the_best_finite_scores(scores: list[float], k: int,
                                          expected: list[int]) -> None:
    """Best first, ties to the lower index, -inf (excluded items) never ranked."""
    assert top(np.array(scores), k).tolist() == expected


# -- ranking metrics ----------------------------------------------------------------------------

# Five items, three users, k = 3. Every user gets the same scores, item 0 best:
SCORES = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
TRAIN = sparse.csr_matrix(np.array([[1, 0, 0, 0, 0],     # user 0 bought item 0
                                    [0, 0, 0, 0, 0],     # user 1 bought nothing yet
                                    [0, 1, 1, 0, 0]],    # user 2 bought items 1 and 2
                                   dtype=np.float32))
HIDDEN = [np.array([2, 4]), np.array([1]), np.array([3, 4])]
# Discounts 1 / log2(rank + 1): d1 = 1, d2 = 0.63093, d3 = 0.5.
# user 0: item 0 is excluded, ranking [1, 2, 3]: hits [-, 2, -] (4 is ranked 4th, past k)
#         precision 1/3, DCG d2 = 0.63093, ideal (2 hidden) d1 + d2 = 1.63093, NDCG 0.38685
# user 1: ranking [0, 1, 2]: hits [-, 1, -]
#         precision 1/3, DCG d2, ideal (1 hidden) d1 = 1, NDCG 0.63093
# user 2: items 1 and 2 excluded, ranking [0, 3, 4]: hits [-, 3, 4]
#         precision 2/3, DCG d2 + d3 = 1.13093, ideal d1 + d2 = 1.63093, NDCG 0.69343
PER_USER = {0: {"precision@3": 0.3333, "ndcg@3": 0.3869},
            1: {"precision@3": 0.3333, "ndcg@3": 0.6309},
            2: {"precision@3": 0.6667, "ndcg@3": 0.6934}}


def test_ranking_metrics_on_a_hand_computed_case() -> None:
    """Means over the three users: precision (1/3 + 1/3 + 2/3) / 3 = 4/9, NDCG
    (0.38685 + 0.63093 + 0.69343) / 3 = 0.57040."""
    users = np.arange(3)
    scores = np.tile(SCORES, (3, 1))
    assert ranking_metrics(scores, TRAIN, users, HIDDEN, k=3) == \
        {"precision@3": 0.4444, "ndcg@3": 0.5704}


@pytest.mark.parametrize("user", [0, 1, 2])
def test_each_score_row_is_graded_as_the_user_it_names(user: int) -> None:
    """Row i of the scores belongs to users[i]: its own training items are excluded and its
    own hidden items count, whatever its position."""
    assert ranking_metrics(SCORES[None, :], TRAIN, np.array([user]), HIDDEN, k=3) == \
        PER_USER[user]


def test_a_perfect_ranking_scores_one_and_precision_is_hits_over_k() -> None:
    """NDCG is 1 when the hidden items lead the ranking and 0 without a hit; precision is
    hits over k even when fewer than k items are hidden, or left to rank."""
    train = sparse.csr_matrix((1, 5), dtype=np.float32)
    hidden = [np.array([3, 4])]
    best = np.array([[0.0, 0.1, 0.2, 0.9, 0.8]])  # ranking [3, 4, 2]: two hits of three
    worst = np.array([[0.9, 0.8, 0.7, 0.0, 0.1]])  # ranking [0, 1, 2]: no hit
    assert ranking_metrics(best, train, np.array([0]), hidden, k=3) == \
        {"precision@3": 0.6667, "ndcg@3": 1.0}
    assert ranking_metrics(worst, train, np.array([0]), hidden, k=3) == \
        {"precision@3": 0.0, "ndcg@3": 0.0}
    # items 0-2 bought: only [3, 4] are left to rank, one hit: 1/3, not 1/2
    bought = sparse.csr_matrix(np.array([[1, 1, 1, 0, 0]], dtype=np.float32))
    assert ranking_metrics(best, bought, np.array([0]), [np.array([3])], k=3) == \
        {"precision@3": 0.3333, "ndcg@3": 1.0}


# -- holdout split ------------------------------------------------------------------------------

def interactions() -> sparse.csr_matrix:
    """Users with 4, 5, 9, 10 and 0 distinct items; values tell the items apart."""
    rows = {0: [0, 1, 2, 3], 1: [0, 2, 4, 6, 8], 2: list(range(1, 10)),
            3: list(range(10)), 4: []}
    dense = np.zeros((5, 12), dtype=np.float32)
    for user, items in rows.items():
        for item in items:
            dense[user, item] = 10 * user + item + 1
    return sparse.csr_matrix(dense)


@pytest.mark.parametrize(("fraction", "hidden_counts"), [
    # int(n * fraction) of users with >= 5 items: 4 -> 0 (too few), 5 -> 1, 9 -> int(1.8)
    # = 1, 10 -> 2, 0 -> 0
    pytest.param(0.2, [0, 1, 1, 2, 0], id="fifth"),
    # 5 -> int(2.5) = 2, 9 -> int(4.5) = 4, 10 -> 5
    pytest.param(0.5, [0, 2, 4, 5, 0], id="half"),
])
def test_holdout_hides_a_fraction_of_each_users_items(fraction: float,
                                                      hidden_counts: list[int]) -> None:
    """Users with at least 5 items lose int(fraction * n) of them, the others none."""
    _, hidden = holdout_split(interactions(), fraction, seed=7)
    assert [len(h) for h in hidden] == hidden_counts


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_holdout_moves_items_without_leaking_or_losing_any(seed: int) -> None:
    """Each hidden item was the user's and is gone from their training row; every other
    interaction stays, with its value; shape and dtype are kept."""
    matrix = interactions()
    train, hidden = holdout_split(matrix, 0.5, seed=seed)
    assert train.shape == matrix.shape and train.dtype == np.float32
    for user in range(matrix.shape[0]):
        own = set(matrix[user].indices.tolist())
        kept = set(train[user].indices.tolist())
        gone = set(hidden[user].tolist())
        assert len(gone) == len(hidden[user])  # distinct items
        assert gone <= own and not gone & kept, user  # no hidden item left to train on
        assert kept | gone == own, user  # nothing dropped on the way
        np.testing.assert_array_equal(train[user].toarray()[0, sorted(kept)],
                                      matrix[user].toarray()[0, sorted(kept)])


def test_holdout_is_determined_by_its_seed() -> None:
    """The same seed hides the same items; other seeds hide others (the pick is random,
    not the first items of each row)."""
    matrix = interactions()
    first_train, first = holdout_split(matrix, 0.5, seed=3)
    again_train, again = holdout_split(matrix, 0.5, seed=3)
    assert [h.tolist() for h in first] == [h.tolist() for h in again]
    assert (first_train != again_train).nnz == 0
    picks = {tuple(tuple(sorted(h.tolist())) for h in holdout_split(matrix, 0.5, seed=s)[1])
             for s in range(10)}
    assert len(picks) > 5


# -- sentiment evaluation -----------------------------------------------------------------------

# Six held-out texts and what the model predicts for each (true label -> predicted):
#   negative -> negative, negative -> negative, negative -> neutral,
#   neutral -> positive, positive -> positive, positive -> positive
# Confusion (rows true, columns predicted, in LABELS order):
#   negative [2, 1, 0]   neutral [0, 0, 1]   positive [0, 0, 2]
# negative: P 2/2 = 1, R 2/3, F1 2 * (2/3) / (5/3) = 0.8
# neutral:  P 0/1 = 0, R 0/1 = 0, F1 0
# positive: P 2/3, R 2/2 = 1, F1 0.8
# accuracy 4/6 = 0.6667; macro-F1 (0.8 + 0 + 0.8) / 3 = 0.5333 (weighted and micro: 0.6667)
TEST_SET = [("a", "negative", "negative"), ("b", "negative", "negative"),
            ("c", "negative", "neutral"), ("d", "neutral", "positive"),
            ("e", "positive", "positive"), ("f", "positive", "positive")]
TRAIN_SET = [("g", "negative"), ("h", "neutral"), ("i", "positive"), ("j", "positive")]


class Lookup:
    """A stand-in pipeline predicting from a table, so the figures depend on it alone."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> Lookup:
        return self

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.answers[t] for t in texts])


def test_sentiment_evaluation_figures_on_a_hand_computed_confusion(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """train() reports accuracy, macro-F1, per-class figures and the confusion matrix of
    its held-out split, in LABELS order, as worked out above."""
    texts = [t for t, _ in TRAIN_SET] + [t for t, _, _ in TEST_SET]
    labels = [y for _, y in TRAIN_SET] + [y for _, y, _ in TEST_SET]
    splits: list[dict[str, Any]] = []

    def split(x: list[str], y: list[str], **options: Any) -> tuple[list[str], ...]:
        splits.append(options)
        return ([t for t, _ in TRAIN_SET], [t for t, _, _ in TEST_SET],
                [y for _, y in TRAIN_SET], [y for _, y, _ in TEST_SET])

    monkeypatch.setattr("sklearn.model_selection.train_test_split", split)
    monkeypatch.setattr(sentiment_training, "make_pipeline",
                        lambda: Lookup({t: p for t, _, p in TEST_SET}))
    evaluation = sentiment_training.train(texts, labels).evaluation
    assert splits == [{"test_size": 0.2, "stratify": labels, "random_state": 42}]
    assert evaluation == {
        "split": "stratified 80/20, random_state=42",
        "train_size": 4,
        "test_size": 6,
        "accuracy": 0.6667,
        "macro_f1": 0.5333,
        "per_class": {
            "negative": {"precision": 1.0, "recall": 0.6667, "f1-score": 0.8},
            "neutral": {"precision": 0.0, "recall": 0.0, "f1-score": 0.0},
            "positive": {"precision": 0.6667, "recall": 1.0, "f1-score": 0.8},
        },
        "confusion_matrix": {"labels": ["negative", "neutral", "positive"],
                             "matrix": [[2, 1, 0], [0, 0, 1], [0, 0, 2]]},
    }


# -- the recommender's evaluation -----------------------------------------------------------------

def test_recommender_evaluation_excludes_each_users_own_purchases(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline's figures are those of its ranking with the evaluated user's own training
    items excluded."""
    from ml import recommender_training

    # User 0 bought items 10 and 11 (too few to evaluate); user 1 bought items 0-9, of which
    # the split hides 2. Popularity on the training matrix: 1 for items 10, 11 and user 1's
    # 8 training items, 0 for the 2 hidden ones. With user 1's own 8 excluded, the ranking
    # is [10, 11, hidden, hidden]: precision 2/10, NDCG (d3 + d4) / (d1 + d2) =
    # (0.5 + 0.43068) / 1.63093 = 0.57064.
    dense = np.zeros((2, 12), dtype=np.float32)
    dense[0, [10, 11]] = 1.0
    dense[1, :10] = 1.0
    monkeypatch.setattr(recommender_training, "fit_als",
                        lambda m: (np.zeros((2, 2)), np.zeros((12, 2))))
    evaluation = recommender_training.evaluate(sparse.csr_matrix(dense))
    assert evaluation["users_evaluated"] == 1
    assert evaluation["popularity"] == {"precision@10": 0.2, "ndcg@10": 0.5706}
