"""What the sentiment model reads: negation scope, lexicon features, calibration error, and
the general-domain texts (the check set is a test set: never among the training texts)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ml.sentiment_text import Lexicon, LexiconFeatures, tokens, word_grams
from ml.sentiment_training import (
    CHECKS_PATH,
    GENERAL_PATH,
    LABELS,
    calibration_error,
    load_labelled,
)

DEV_PATH = CHECKS_PATH.with_name("sentiment_dev.csv")


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("Not bad at all!", ["not", "not_bad", "not_at", "not_all", "!"], id="not"),
    pytest.param("I don't like it, but it works.",
                 ["i", "don't", "not_like", "not_it", "but", "it", "works"], id="comma-ends"),
    pytest.param("never again", ["never", "not_again"], id="never"),
    pytest.param("It isn't good but fine", ["it", "isn't", "not_good", "but", "fine"],
                 id="but-ends"),
    pytest.param("Great 😍 see https://x.io @bob", ["great", "😍", "see", "url", "user"],
                 id="emoji-url-mention"),
])
def test_tokens_mark_the_scope_of_a_negation(text: str, expected: list[str]) -> None:
    assert tokens(text) == expected


def test_word_grams_are_tokens_and_neighbour_pairs() -> None:
    assert word_grams("not good") == ["not", "not_good", "not not_good"]


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return Lexicon.from_vader()


def test_lexicon_reads_vader_words_boosters_and_emoji(lexicon: Lexicon) -> None:
    assert lexicon.valence["good"] == 1.9 and lexicon.valence["terrible"] == -2.1
    assert lexicon.boosters["very"] > 0 > lexicon.boosters["slightly"]
    assert lexicon.valence["😍"] > 0 > lexicon.valence["😢"]  # heart-eyes, crying face
    assert "😡" not in lexicon.valence  # "pouting face": no rated word in its name


def test_lexicon_features_flip_boost_and_turn(lexicon: Lexicon) -> None:
    """good = 1.9: negated 1.9 * -0.74 = -1.406; 'very good' 1.9 + 0.293; before 'but' a
    word counts half, after it one and a half."""
    good = lexicon.valence["good"]
    assert lexicon.features(["good"])[:2] == [good, 0.0]
    assert lexicon.features(tokens("not good"))[:2] == pytest.approx([0.0, good * 0.74])
    assert lexicon.features(tokens("very good"))[0] == pytest.approx(good + 0.293)
    bad = -lexicon.valence["bad"]
    assert lexicon.features(tokens("good but bad"))[:2] == pytest.approx(
        [good * 0.5, bad * 1.5])
    positive, negative, compound, rated = lexicon.features(tokens("good and great"))
    total = positive - negative
    assert compound == pytest.approx(total / np.sqrt(total * total + 15))
    assert rated == 1.0
    assert lexicon.features(tokens("the bus leaves at nine")) == [0.0, 0.0, 0.0, 0.0]


def test_lexicon_transformer_scales_its_columns() -> None:
    features = LexiconFeatures(scale=3.0).fit(["x"])
    rows = features.transform(["good", "the bus"])
    assert rows.shape == (2, 4)
    assert rows[0].tolist() == pytest.approx([3 * 1.9, 0, 3 * 1.9 / np.sqrt(1.9**2 + 15), 3])
    assert not rows[1].any()


def test_calibration_error_on_a_hand_computed_case() -> None:
    """Bins of width 0.1: texts 1-2 at confidence 0.95 (one right: |0.5 - 0.95| = 0.45),
    texts 3-4 at 0.6 (both right: |1 - 0.6| = 0.4); each bin holds half: ECE 0.425."""
    p = np.array([[0.95, 0.03, 0.02], [0.02, 0.03, 0.95], [0.6, 0.3, 0.1], [0.1, 0.3, 0.6]])
    labels = ["negative", "negative", "negative", "positive"]
    assert calibration_error(p, labels) == pytest.approx(0.425)
    assert calibration_error(np.eye(3), list(LABELS)) == 0.0  # sure and right


# -- the general-domain texts -------------------------------------------------------------------

def test_check_set_covers_the_issue() -> None:
    import csv

    with CHECKS_PATH.open(encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) >= 200
    assert {row["label"] for row in rows} == set(LABELS)
    assert min(Counter(row["label"] for row in rows).values()) >= 60
    categories = Counter(row["category"] for row in rows)
    for category in ("product", "restaurant", "book", "film", "service", "fact",
                     "announcement", "schedule", "question", "negation", "intensity", "emoji",
                     "mixed"):
        assert categories[category] >= 10, category
    assert (CHECKS_PATH.parent / "README.md").read_text().count("licence") >= 1


def test_check_and_dev_texts_are_never_training_texts() -> None:
    training, _ = load_labelled(GENERAL_PATH)
    checks, _ = load_labelled(CHECKS_PATH)
    dev, _ = load_labelled(DEV_PATH)
    normal = {" ".join(tokens(t)) for t in training}
    assert len(set(checks)) == len(checks) and len(set(training)) == len(training)
    assert not normal & {" ".join(tokens(t)) for t in checks}
    assert not normal & {" ".join(tokens(t)) for t in dev}
    assert not set(checks) & set(dev)
