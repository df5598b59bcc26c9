"""The evaluation code itself, on toy cases worked out by hand: top-k ranking (one product
per type), the figures that grade every recommender and baseline alike (precision@k, NDCG@k,
coverage, diversity), the recommender's split of the last weeks into Discover and Buy again
targets and its figures for both lists, and the sentiment model's accuracy, macro-F1,
per-class figures and confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from ml import sentiment_training
from ml.grocery import Products
from ml.ranking import BLOCK, best_new, best_owned, grade, largest, top, top_distinct
from ml.recommender_evaluation import evaluate, holdout

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


@pytest.mark.parametrize(("scores", "groups", "k", "per_group", "expected"), [
    pytest.param([5, 4, 3, 2, 1], [0, 0, 1, 1, 2], 3, 1, [0, 2, 4], id="one-per-group"),
    pytest.param([5, 4, 3, 2, 1], [0, 0, 1, 1, 2], 3, 2, [0, 1, 2], id="two-per-group"),
    pytest.param([5, 4, 3, 2, 1], [0, 0, 1, 1, 2], 5, 5, [0, 1, 2, 3, 4], id="no-limit"),
    pytest.param([1, -np.inf, 0.5, 0.4], [0, 1, 2, 2], 3, 1, [0, 2], id="excluded-and-short"),
    pytest.param([5, 5, 4], [7, 7, 3], 2, 1, [0, 2], id="tie-keeps-the-lower-index"),
])
def test_top_distinct_takes_the_best_of_each_group(scores: list[float], groups: list[int],
                                                   k: int, per_group: int,
                                                   expected: list[int]) -> None:
    """A product whose type is already listed (per_group times) gives way to the next."""
    assert top_distinct(np.array(scores, dtype=float), np.array(groups), k,
                        per_group).tolist() == expected


def test_top_distinct_looks_past_a_long_run_of_one_group() -> None:
    """100 products of one type lead; the second list entry is the 101st product."""
    scores = np.r_[np.linspace(2.0, 1.0, 100), 0.5, 0.4]
    groups = np.r_[np.zeros(100, dtype=int), 1, 2]
    assert top_distinct(scores, groups, 3).tolist() == [0, 100, 101]


@pytest.mark.parametrize("size", [200, 4 * BLOCK * 10, 17_148, 50_000])
def test_largest_finds_the_same_scores_as_a_full_partition(size: int) -> None:
    """The block-maxima floor skips most scores of a long array, never one of the best:
    random scores, scores rising along the array (the best all in the last blocks), a
    product catalogue whose every block but two is excluded (-inf), and counts up to a
    quarter of a block's worth."""
    rng = np.random.default_rng(size)
    arrays = [rng.standard_normal(size), np.linspace(0.0, 1.0, size),
              rng.standard_normal(size).astype(np.float32)]
    sparse = np.full(size, -np.inf)
    sparse[:BLOCK] = rng.standard_normal(BLOCK)
    sparse[-3:] = [5.0, 4.0, 3.0]  # the tail block, shorter than BLOCK where size allows
    arrays.append(sparse)
    for scores in arrays:
        for count in (1, 10, 56, 200):
            if count >= size:
                continue
            expected = set(np.argpartition(-scores, count - 1)[:count].tolist())
            found = largest(scores, count)
            assert len(found) == count and set(found.tolist()) == expected, (size, count)


def test_best_new_and_best_owned_apply_the_mask_the_history_and_the_groups() -> None:
    scores = np.array([9.0, 8.0, 7.0, 6.0, 5.0])
    allowed = np.array([False, True, True, True, True])  # product 0: fuel, say
    groups = np.array([0, 1, 1, 2, 3])
    # product 3 already bought; 2 shares 1's type
    assert best_new(scores, allowed, np.array([3]), groups, 3).tolist() == [1, 4]
    # the household's own products 0, 2, 4 with its own scores: 0 is not allowed
    assert best_owned(np.array([0, 2, 4]), np.array([3.0, 1.0, 2.0]), allowed, groups,
                      3).tolist() == [4, 2]


# -- the figures -------------------------------------------------------------------------------

def test_grade_on_a_hand_computed_case() -> None:
    """Two lists, k = 3, discounts d1 = 1, d2 = 0.63093:
    list [0, 1, 2] against {1}: precision 1/3, NDCG d2 / d1 = 0.63093;
    list [3] against {3, 4}: precision 1/3 (hits over k, however short the list),
    NDCG d1 / (d1 + d2) = 0.61315. Means: 0.3333 and 0.62204.
    Coverage: products 0-3 of 10 = 0.4. Diversity: list one's categories [0, 0, 1] differ in
    4 of 6 ordered pairs (0.6667); a one-product list has no pairs and is left out."""
    figures = grade([np.array([0, 1, 2]), np.array([3])], [np.array([1]), np.array([3, 4])],
                    catalogue=10, categories=np.array([0, 0, 1, 2, 2]), k=3)
    assert figures == {"precision@3": 0.3333, "ndcg@3": 0.622, "coverage": 0.4,
                       "diversity": 0.6667}


def test_a_perfect_list_scores_one_and_a_miss_zero() -> None:
    categories = np.arange(5)
    assert grade([np.array([3, 4, 2])], [np.array([3, 4])], catalogue=5,
                 categories=categories, k=3)["ndcg@3"] == 1.0
    assert grade([np.array([0, 1, 2])], [np.array([3, 4])], catalogue=5,
                 categories=categories, k=3) == {"precision@3": 0.0, "ndcg@3": 0.0,
                                                 "coverage": 0.6, "diversity": 1.0}


# -- the recommender's holdout --------------------------------------------------------------------

# Six products (ids 100-105), four households. Product 105 is fuel (the catalogue policy leaves
# it out); 101 and 102 are one product type; 100, 101 and 102 one category.
# Weeks 1-8 to learn from, 9-10 held out:
#   household 1 bought 100 (weeks 1, 2), 101 (8), 105 (3);   then 102, 103, 105, 101
#   household 2 bought 100 (5), 102 (6), 103 (7);            then 104, 100
#   household 3 bought 103 (8), 104 (1);                     then 100, 104, 103
#   household 4 bought nothing before the split;             then 100 (not graded)
# Discover targets (new groceries): 1 -> {102, 103}, 2 -> {104}, 3 -> {100}
# Buy again targets (bought before): 1 -> {101}, 2 -> {100}, 3 -> {103, 104}
LEARN = {1: [(100, 1), (100, 2), (101, 8), (105, 3)], 2: [(100, 5), (102, 6), (103, 7)],
         3: [(103, 8), (104, 1)]}
LATER = {1: [102, 103, 105, 101], 2: [104, 100], 3: [100, 104, 103], 4: [100]}
KINDS = np.array([0, 1, 1, 2, 3, 4])
CATEGORIES = np.array([0, 0, 0, 1, 2, 3])


def purchases() -> pd.DataFrame:
    rows = [(h, p, w) for h, bought in LEARN.items() for p, w in bought]
    rows += [(h, p, 9 + i % 2) for h, bought in LATER.items() for i, p in enumerate(bought)]
    return pd.DataFrame(rows, columns=["household_id", "product_id", "week"])


def describe(items: np.ndarray) -> Products:
    assert items.tolist() == [100, 101, 102, 103, 104, 105]
    return Products(descriptions=np.array([f"p{i}" for i in items], dtype=object),
                    departments=np.array(["GROCERY"] * 5 + ["FUEL"], dtype=object),
                    kinds=KINDS, categories=CATEGORIES,
                    exclusions=np.array([""] * 5 + ["fuel"], dtype=object))


def test_holdout_splits_the_last_weeks_into_new_and_repeat_purchases() -> None:
    split = holdout(purchases(), weeks=2, describe=describe, min_households=1)
    assert split.first_week == 9
    assert split.data.users.tolist() == [1, 2, 3]  # household 4 has nothing to learn from
    assert split.data.counts.toarray().tolist() == [[2, 1, 0, 0, 0, 1], [1, 0, 1, 1, 0, 0],
                                                   [0, 0, 0, 1, 1, 0]]
    # positions of the products: 100 -> 0, ..., 105 -> 5; fuel (5) is nobody's target
    assert [(row, wanted.tolist()) for row, wanted in split.discover] == \
        [(0, [2, 3]), (1, [4]), (2, [0])]
    assert [(row, wanted.tolist()) for row, wanted in split.buy_again] == \
        [(0, [1]), (1, [0]), (2, [3, 4])]
    # each purchase weighs exp(-(8 - week) / 32): household 2's most recent comes first
    recent = split.data.recent.toarray()[1]
    assert recent[3] > recent[2] > recent[0] > 0
    np.testing.assert_allclose(recent[[0, 2, 3]], np.exp(-np.array([3, 2, 1]) / 32), rtol=1e-6)


def test_recommender_evaluation_on_a_hand_computed_case() -> None:
    """Every list as served: groceries only, new ones (Discover) or bought ones (Buy again),
    one per product type, k = 10; d1 = 1, d2 = 0.63093, d3 = 0.5.

    popularity (households before the split: 100: 2, 101: 1, 102: 1, 103: 2, 104: 1):
      1: [103, 102, 104], hits at 1 and 2: NDCG 1;  2: [101, 104]: d2 = 0.63093;
      3: [100, 101] (102 is 101's type): NDCG 1.   Mean 0.87698; precision (2+1+1)/30.
    ALS (fitted scores 100: 0, 101: 5, 102: 4, 103: 3, 104: 2, fuel 105: 9, never listed):
      1: [102, 103, 104]: 1;  2: [101, 104]: d2;  3: [101, 100]: d2.   Mean 0.75395.
    frequency: 1: [100 (2 buys), 101]: d2;  2: [100, 102, 103] (ties): 1;  3: [103, 104]: 1.
      Mean 0.87698.
    recency_frequency: 2's are weighted 0.9105 (100), 0.9394 (102), 0.9692 (103), so
      2: [103, 102, 100]: d3 = 0.5; the others as frequency. Mean (d2 + 0.5 + 1) / 3 = 0.71031.
    Coverage: every list set together holds all five groceries. Diversity: Discover lists
    1 and 2 mix categories (1.0), list 3 does not (0): 0.6667; Buy again: 1 [0, 0] -> 0,
    2 [0, 0, 1] -> 4 of 6 pairs, 3 [1, 2] -> 1: 0.5556."""
    seen = []

    def fit(counts: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        seen.append(counts.toarray())
        return np.ones((3, 1)), np.array([[0.0], [5.0], [4.0], [3.0], [2.0], [9.0]])

    evaluation = evaluate(purchases(), fit=fit, describe=describe, weeks=2, min_households=1)
    assert len(seen) == 1 and seen[0].sum() == 9  # fitted on the 9 purchases before the split
    assert evaluation["households"] == {"discover": 3, "buy_again": 3}
    assert evaluation["popularity"] == {"precision@10": 0.1333, "ndcg@10": 0.877,
                                        "coverage": 1.0, "diversity": 0.6667}
    assert evaluation["als"] == {"precision@10": 0.1333, "ndcg@10": 0.754,
                                 "coverage": 1.0, "diversity": 0.6667}
    assert evaluation["frequency"] == {"precision@10": 0.1333, "ndcg@10": 0.877,
                                       "coverage": 1.0, "diversity": 0.5556}
    assert evaluation["recency_frequency"] == {"precision@10": 0.1333, "ndcg@10": 0.7103,
                                               "coverage": 1.0, "diversity": 0.5556}
    assert evaluation["lift"] == {"discover ndcg@10": 0.86, "buy_again ndcg@10": 0.81}
    assert "weeks 9-10" in evaluation["protocol"]


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

    def split(x: list[str], y: list[str], weights: Any, **options: Any) -> tuple[Any, ...]:
        splits.append(options)
        return ([t for t, _ in TRAIN_SET], [t for t, _, _ in TEST_SET],
                [y for _, y in TRAIN_SET], [y for _, y, _ in TEST_SET],
                weights[:len(TRAIN_SET)], weights[len(TRAIN_SET):])

    monkeypatch.setattr("sklearn.model_selection.train_test_split", split)
    monkeypatch.setattr(sentiment_training, "make_pipeline",
                        lambda: Lookup({t: p for t, _, p in TEST_SET}))
    evaluation = sentiment_training.train(texts, labels).evaluation
    assert splits == [{"test_size": 0.2, "stratify": labels, "random_state": 42}]
    assert evaluation == {
        "split": "stratified 80/20, random_state=42",
        "tweet_weights": "none",
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


class Recorder(Lookup):
    """A stand-in pipeline that keeps what its fit was given."""

    def fit(self, texts: Sequence[str], labels: Sequence[str], **params: Any) -> Recorder:
        self.texts, self.params = list(texts), params
        return self


def test_tweets_weigh_as_much_as_the_crowd_agreed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each training tweet weighs the crowd's confidence in its label, each general text
    GENERAL_WEIGHT; the held-out split is the one the unweighted training used."""
    texts = [f"tweet {i}" for i in range(20)]
    labels = ["negative", "neutral", "positive", "positive"] * 5
    confidence = np.linspace(0.3, 1.0, len(texts))
    recorder = Recorder(dict.fromkeys(texts, "neutral"))
    monkeypatch.setattr(sentiment_training, "make_pipeline", lambda: recorder)
    general = (["it is lovely", "it is dreadful"], ["positive", "negative"])
    evaluation = sentiment_training.train(texts, labels, general, None, confidence).evaluation
    by_text = dict(zip(texts, confidence.tolist(), strict=True))
    tweets = recorder.texts[:-2]
    assert recorder.texts[-2:] == general[0] and len(tweets) == 16
    assert recorder.params["clf__sample_weight"].tolist() == (
        [by_text[t] for t in tweets] + [sentiment_training.GENERAL_WEIGHT] * 2)
    assert evaluation["tweet_weights"] == "the crowd's confidence"
    unweighted = Recorder(dict.fromkeys(texts, "neutral"))
    monkeypatch.setattr(sentiment_training, "make_pipeline", lambda: unweighted)
    sentiment_training.train(texts, labels, general)
    assert unweighted.texts == recorder.texts
    assert unweighted.params["clf__sample_weight"].tolist() == (
        [1.0] * 16 + [sentiment_training.GENERAL_WEIGHT] * 2)


def test_the_corpus_confidence_lines_up_with_its_texts() -> None:
    texts, _ = sentiment_training.load_corpus()
    confidence = sentiment_training.load_confidence()
    assert confidence.shape == (len(texts),)
    assert ((confidence > 0.25) & (confidence <= 1.0)).all()
    assert 0.5 < (confidence == 1.0).mean() < 0.9  # most labels unanimous, many not
