"""Sentiment model: behaviour tables, equivalence with sklearn, input rules, caching."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import msgspec
import numpy as np
import pytest

from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.errors import InvalidInput
from ml.samples import TEXT_LABELS
from ml.sentiment import (
    EXAMPLES,
    LABELS,
    PRINTABLE,
    SentimentQuery,
    SentimentResult,
    build,
    load_corpus,
)
from ml.sentiment_cnn import BLANK, PHRASE
from ml.sentiment_scoring import CNN_GATE, CNN_WEIGHT
from ml.sentiment_training import TrainedSentiment
from tests.ml.cnn_reference import reference_logits

# -- behavioural tables (minimum functionality, direction, invariance) ---------------------

def weakness(reason: str) -> pytest.MarkDecorator:
    """A known weakness, kept visible: the strict xfail fails the suite once it is fixed."""
    return pytest.mark.xfail(strict=True, reason=reason)


@pytest.mark.parametrize(("text", "label"), [
    pytest.param("I love this, it is absolutely wonderful!", "positive", id="love"),
    pytest.param("What a great day, so happy with it", "positive", id="great-day"),
    pytest.param("This is the best thing ever, thank you!", "positive", id="best"),
    pytest.param("I hate this, it is terrible and useless", "negative", id="hate"),
    pytest.param("Worst experience ever, totally awful", "negative", id="worst"),
    pytest.param("I am so disappointed, this is horrible", "negative", id="disappointed"),
    pytest.param("The meeting is scheduled for 3pm on Tuesday", "neutral", id="schedule"),
    pytest.param("The museum opens at 10 am on weekdays.", "neutral", id="opening-hours"),
    pytest.param("Google announced a new self-driving car project today", "neutral",
                 id="announcement"),
    pytest.param("the bus leaves at nine", "neutral", id="timetable"),
    # off the tweets' domain (the issue's examples)
    pytest.param("I absolutely loved this phone, the camera is stunning and the battery lasts "
                 "for days!", "positive", id="product-review"),
    pytest.param("You should definitely try the ramen at this place, it is fantastic.",
                 "positive", id="restaurant-recommendation"),
    pytest.param("This book is a delight, I recommend it to everyone.", "positive",
                 id="book-recommendation"),
    # negation
    pytest.param("Not bad at all, though the battery could last longer.", "positive",
                 id="not-bad-at-all"),
    pytest.param("not bad", "positive", id="not-bad"),
    pytest.param("not good", "negative", id="not-good"),
    pytest.param("never again", "negative", id="never-again"),
    # emoji and mixed sentences
    pytest.param("The ride was great 😍", "positive", id="emoji-positive"),
    pytest.param("Delayed again 😡", "negative", id="emoji-negative"),
    pytest.param("The staff were nice but the food was awful.", "negative", id="but-negative"),
    pytest.param("The hotel is old but the staff are wonderful.", "positive", id="but-positive"),
    pytest.param("I really like it", "positive", id="really-like"),
    pytest.param("I couldn't be happier with it.", "positive", id="negated-comparative"),
    pytest.param("It was pretty good, I suppose.", "positive", id="hedge"),
    # weak spots of the linear model alone that the word CNN fixes (CNN_FIXES)
    pytest.param("Autonomous cars are a terrible idea", "negative", id="topic-words"),
    pytest.param("I did not enjoy the film.", "negative", id="negated-verb"),
    pytest.param("The lecture was incredibly boring.", "negative", id="intensifier"),
    pytest.param("Oh great, another delay. Just what I needed.", "negative", id="sarcasm"),
    # Known weaknesses, kept visible.
    pytest.param("John loves his new car", "positive", id="topic-word-car",
                 marks=weakness("'car' is a topic of the tweets: it pulls to neutral")),
    pytest.param("My package was left in the rain and got soaked.", "negative",
                 id="complaint-without-sentiment-words", marks=weakness(
                     "no word of it is rated: a complaint told as plain facts")),
    pytest.param("The webinar lasts one hour.", "neutral", id="duration",
                 marks=weakness("durations read as complaints about delays in the tweets")),
    pytest.param("I'm not unhappy with the result.", "positive", id="double-negation",
                 marks=weakness("a negated negative word stays negative")),
    pytest.param("I would never trust a car that drives itself, scary", "negative",
                 id="never-trust", marks=weakness(
                     "'car' and 'drives' are topics of the tweets: they pull to neutral")),
])
def test_minimum_functionality(sentiment, text: str, label: str) -> None:  # type: ignore[no-untyped-def]
    assert sentiment.predict_one(text).sentiment == label


@pytest.mark.parametrize(("better", "worse"), [
    pytest.param("this is good", "this is not good", id="negation"),
    pytest.param("the service was great", "the service was awful", id="antonym"),
    pytest.param("I really like it", "I really dislike it", id="like-dislike"),
    pytest.param("love it!", "hate it!", id="love-hate"),
    pytest.param("not bad", "bad", id="negated-negative"),
    pytest.param("it was really good", "it was not good", id="negated-positive"),
    pytest.param("Loved the show 😍", "Saw the show 😡", id="emoji"),
])
def test_direction(sentiment, better: str, worse: str) -> None:  # type: ignore[no-untyped-def]
    assert sentiment.predict_one(better).score > sentiment.predict_one(worse).score


@pytest.mark.parametrize(("a", "b"), [
    pytest.param("John loves his new car", "Maria loves her new car", id="names",
                 marks=weakness("names move the word CNN: 'maria loves' reads as praise, "
                                "while 'car' pulls John's sentence to neutral")),
    pytest.param("Flight to Paris was great", "Flight to Tokyo was great", id="places"),
    pytest.param("I hate waiting in traffic", "I  hate  waiting in traffic", id="spacing"),
])
def test_invariance(sentiment, a: str, b: str) -> None:  # type: ignore[no-untyped-def]
    first, second = sentiment.predict_one(a), sentiment.predict_one(b)
    assert first.sentiment == second.sentiment
    assert abs(first.score - second.score) < 0.35


# -- the word CNN, asked where the linear model is unsure (the default) -------------------

@pytest.fixture(scope="module")
def linear(settings: Settings):  # type: ignore[no-untyped-def]
    """The linear model alone (ML_SENTIMENT_CNN=false), from the session's artifact cache."""
    return build(replace(settings, sentiment_cnn=False), ArtifactStore(settings.cache_dir))


CNN_FIXES = [("Autonomous cars are a terrible idea", "negative"),
             ("I did not enjoy the film.", "negative"),
             ("The lecture was incredibly boring.", "negative"),
             ("Oh great, another delay. Just what I needed.", "negative")]


@pytest.mark.parametrize(("text", "label"), CNN_FIXES)
def test_the_word_cnn_fixes_weak_spots_of_the_linear_model(sentiment, linear, text: str,  # type: ignore[no-untyped-def]
                                                           label: str) -> None:
    """One example each of topic words, a negated verb, an intensifier and sarcasm: the
    linear model alone gets each wrong, unsure, so the served model asks the word CNN."""
    assert linear.predict_one(text).sentiment != label
    assert sentiment.scorer.blended([text]) == [True]
    assert sentiment.predict_one(text).sentiment == label


def test_the_word_cnn_is_asked_only_where_the_linear_model_is_unsure(sentiment, linear  # type: ignore[no-untyped-def]
                                                                     ) -> None:
    """Where the linear model's top probability reaches the gate, the served answer is the
    linear model's, bit for bit; below it, another answer (the blend's). On tweets the CNN
    runs for a third to a half of the texts."""
    texts, _ = load_corpus()
    sample = texts[::53][:600]
    asked = sentiment.scorer.blended(sample)
    alone = linear.probabilities(sample)
    served = sentiment.probabilities(sample)
    unsure = alone.max(axis=1) < sentiment.scorer.gate
    assert asked == unsure.tolist()
    assert 0.25 < unsure.mean() < 0.5
    assert np.array_equal(served[~unsure], alone[~unsure])
    assert (np.abs(served[unsure] - alone[unsure]).max(axis=1) > 1e-6).all()


def test_the_linear_model_alone_keeps_the_shipped_examples_and_states_its_limits(linear  # type: ignore[no-untyped-def]
                                                                                 ) -> None:
    shipped = {**EXAMPLES, **TEXT_LABELS}
    assert {text: linear.predict_one(text).sentiment for text in shipped} == shipped
    info = linear.info()
    assert "word CNN" not in info["architecture"] and "sarcasm" in info["limits"]


def test_the_served_model_states_the_blends_limits(sentiment) -> None:  # type: ignore[no-untyped-def]
    info = sentiment.info()
    assert "word CNN" in info["architecture"] and "unsure" in info["architecture"]
    assert "names" in info["limits"] and "sarcasm" not in info["limits"]


# -- result contract and equivalence ------------------------------------------------------

def test_result_fields(sentiment) -> None:  # type: ignore[no-untyped-def]
    result = sentiment.predict_one("I love sunny days", detailed=True)
    assert isinstance(result, SentimentResult)
    assert result.sentiment in LABELS
    shares = msgspec.structs.asdict(result.probabilities)
    assert result.confidence == max(shares.values()) == shares[result.sentiment]
    assert result.score == pytest.approx(shares["positive"] - shares["negative"])
    assert -1.0 <= result.score <= 1.0
    assert sum(shares.values()) == pytest.approx(1.0)
    plain = sentiment.predict_one("I love sunny days")
    assert plain.probabilities is None and plain.terms is None  # only when detailed
    assert (plain.sentiment, plain.confidence, plain.score) == \
        (result.sentiment, result.confidence, result.score)
    with pytest.raises(AttributeError):
        result.sentiment = "neutral"  # type: ignore[misc]


def blended(sentiment, torch_module: ModuleType, texts: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The served model's logits from its references: the scikit-learn pipeline's decision
    function, averaged with the torch word CNN's logits (the serving code's weight) where
    the pipeline's top probability is below the gate."""
    weight = sentiment.scorer.mix[1]
    assert weight == CNN_WEIGHT > 0 and sentiment.scorer.gate == CNN_GATE < 1
    linear = sentiment.pipeline.decision_function(texts)
    unsure = sentiment.pipeline.predict_proba(texts).max(axis=1) < CNN_GATE
    assert 0 < unsure.mean() < 1  # both branches are checked
    out: np.ndarray = np.where(unsure[:, None], (1 - weight) * linear
                               + weight * reference_logits(torch_module, texts), linear)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return out


def test_fast_path_matches_the_reference_models(sentiment, torch_module: ModuleType) -> None:  # type: ignore[no-untyped-def]
    texts, _ = load_corpus()
    sample = [*texts[::37][:1000], "!!!", "zzzz qqqq", "Ünïcödé 😀 tëxt", "a " * 300]
    expected = softmax(blended(sentiment, torch_module, sample))
    single = np.vstack([sentiment.probabilities([t]) for t in sample])  # one at a time
    batch = sentiment.probabilities(sample)  # one gather for all
    assert np.abs(single - expected).max() < 1e-9
    assert np.abs(batch - expected).max() < 1e-9


def test_scorer_terms_add_up_to_the_reference_logits(sentiment, torch_module: ModuleType  # type: ignore[no-untyped-def]
                                                      ) -> None:
    """The serving code's logits (one text and vectorised), and its per-term contributions
    plus the intercept, equal the blend of the pipeline's decision function and the torch
    word CNN; the spelling block equals its definition: each word's own n-gram vector,
    summed, over the root of the word count."""
    texts, _ = load_corpus()
    sample = [*texts[::97][:300], "good good good 😍 not bad", "ᚠᚢᚦ", "Ünïcödé\ttëxt  x",
              "a a a a", "sooooo goooood!!! :)"]
    expected = blended(sentiment, torch_module, sample)
    scorer = sentiment.scorer
    assert np.abs(np.array(scorer.logits(sample)) - expected).max() < 1e-9
    for row, text in enumerate(sample):
        assert np.abs(np.array(scorer.logits([text])[0]) - expected[row]).max() < 1e-9
        names, contributions, intercept = scorer.terms(text)
        assert len(names) == len(contributions) == len(set(names))
        # the word CNN's phrases are terms exactly where it was asked
        assert any(n.startswith(PHRASE) for n in names) == scorer.blended([text])[0]
        assert np.abs(contributions.sum(axis=0) + intercept - expected[row]).max() < 1e-9
    spelling = sentiment.pipeline.named_steps["features"].named_transformers["spelling"]
    for text in [*sample[:20], *sample[-5:]]:
        words = text.lower().split()
        definition = sum(spelling.tfidf_.transform([w]).toarray()[0] for w in words)
        assert np.abs(spelling.transform([text]).toarray()[0]
                      - definition / np.sqrt(len(words))).max() < 1e-12


def test_batch_preserves_order_and_matches_single(sentiment) -> None:  # type: ignore[no-untyped-def]
    texts = ["great", "awful", "the bus leaves at nine", "great"] * 5
    batch = sentiment.classify(texts, detailed=True)
    assert [r.sentiment for r in batch] == [sentiment.predict_one(t).sentiment for t in texts]
    assert batch[0] == batch[3]


def test_detailed_names_the_driving_terms(sentiment) -> None:  # type: ignore[no-untyped-def]
    result = sentiment.predict_one("I love this wonderful phone", detailed=True)
    weights = [abs(t.weight) for t in result.terms]
    assert weights == sorted(weights, reverse=True)
    for word in ("love", "wonderful"):  # as a word, a word pair or a spelling
        assert any(word in t.term and t.weight > 0 and t.toward_positive > 0
                   for t in result.terms), word
    assert sentiment.predict_one("I love this", detailed=False).terms is None


def test_without_the_word_cnn_the_pipeline_serves_alone(sentiment, settings: Settings,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """ML_SENTIMENT_CNN=false: training gets no CNN, and the served answers and terms are the
    pipeline's alone."""
    given: list[object] = []

    def train(*args: object) -> TrainedSentiment:
        given.append(args[-1])
        return TrainedSentiment(sentiment.pipeline, sentiment.evaluation)

    monkeypatch.setattr("ml.sentiment.train", train)
    store = ArtifactStore(tmp_path)
    alone = build(replace(settings, sentiment_cnn=False), store)
    assert given == [None] and alone.scorer.cnn is None
    # its own artifact: servers of both kinds on one cache never rebuild each other's
    assert store.path("sentiment").is_file() and not store.path("sentiment-cnn").exists()
    assert "CNN" not in alone.info()["architecture"]
    texts, _ = load_corpus()
    sample = [*texts[::211][:150], "not bad at all", "ᚠᚢᚦ"]
    assert np.abs(alone.probabilities(sample)
                  - sentiment.pipeline.predict_proba(sample)).max() < 1e-9
    expected = sentiment.pipeline.decision_function(sample)
    for row, text in enumerate(sample):
        names, contributions, intercept = alone.scorer.terms(text)
        assert not any(name.startswith(PHRASE) for name in names)
        assert np.abs(contributions.sum(axis=0) + intercept - expected[row]).max() < 1e-9


def test_text_without_known_words_gets_the_linear_prior(linear) -> None:  # type: ignore[no-untyped-def]
    """No known word and no rated word leave an all-zero feature row, so both paths of the
    linear model alone answer the classifier's prior: the softmax of its intercepts,
    computed here from the pipeline."""
    sentiment = linear
    text = "ᚠᚢᚦ ᚨᚱᚲ"  # runes: no word, character pair or rated word of the training texts
    features = sentiment.pipeline.named_steps["features"]
    clf = sentiment.pipeline.named_steps["clf"]
    assert features.transform([text]).nnz == 0 and list(clf.classes_) == list(LABELS)
    exp = np.exp(clf.intercept_ - clf.intercept_.max())
    prior = exp / exp.sum()
    # a prior far from uniform, so that answering anything else is caught
    assert prior.max() - prior.min() > 0.05
    # explained, alone and in a batch with texts that have words (so the shared gather
    # must leave the empty one out), and plain
    for result in (sentiment.predict_one(text, detailed=True),
                   *sentiment.classify([text] * 3, detailed=True)):
        assert result.terms == ()
    mixed = sentiment.probabilities([text, "great fun", text, "awful", text])
    assert np.abs(mixed[0::2] - prior).max() < 1e-12
    for result in (sentiment.predict_one(text, detailed=True), sentiment.predict_one(text)):
        assert result.sentiment == LABELS[int(np.argmax(prior))]
        assert result.confidence == pytest.approx(prior.max(), abs=1e-12)


def test_blend_text_without_known_words_gets_the_prior(sentiment, torch_module: ModuleType  # type: ignore[no-untyped-def]
                                                  ) -> None:
    """No known word and no rated word leave an all-zero feature row, whose answer (the
    classifier's prior, top probability 0.68) is below the gate, and the word CNN one blank
    token, so both paths answer the blend of the classifier's intercepts and the CNN's
    answer to nothing, computed here from the pipeline and torch."""
    blend = sentiment
    text = "ᚠᚢᚦ ᚨᚱᚲ"  # runes: no word, character pair or rated word of the training texts
    features = blend.pipeline.named_steps["features"]
    clf = blend.pipeline.named_steps["clf"]
    assert features.transform([text]).nnz == 0 and list(clf.classes_) == list(LABELS)
    assert softmax(clf.intercept_[None, :]).max() < blend.scorer.gate
    weight = blend.scorer.mix[1]
    prior = softmax((1 - weight) * clf.intercept_[None, :]
                    + weight * reference_logits(torch_module, [text]))[0]
    # a prior far from uniform, so that answering anything else is caught
    assert prior.max() - prior.min() > 0.05
    # explained, alone and in a batch with texts that have words (so the shared gather
    # must leave the empty one out), and plain: the only term is the CNN's blank window
    for result in (blend.predict_one(text, detailed=True),
                   *blend.classify([text] * 3, detailed=True)):
        assert {t.term for t in result.terms} <= {BLANK}
    mixed = blend.probabilities([text, "great fun", text, "awful", text])
    assert np.abs(mixed[0::2] - prior).max() < 1e-12
    for result in (blend.predict_one(text, detailed=True), blend.predict_one(text)):
        assert result.sentiment == LABELS[int(np.argmax(prior))]
        assert result.confidence == pytest.approx(prior.max(), abs=1e-12)


def test_evaluation_meets_the_bar(sentiment) -> None:  # type: ignore[no-untyped-def]
    """In-domain and general-domain figures, calibration on both (floors below the measured
    0.7807 / 0.7656, ECE 0.027; general 0.907 / 0.906, ECE 0.088)."""
    evaluation = sentiment.info()["evaluation"]
    assert evaluation["accuracy"] >= 0.76
    assert evaluation["macro_f1"] >= 0.745
    assert evaluation["ece"] <= 0.04
    assert evaluation["test_size"] > 7000
    assert evaluation["general_training_texts"] >= 500
    general = evaluation["general"]
    assert general["texts"] >= 200
    assert general["accuracy"] >= 0.88  # the target
    assert general["macro_f1"] >= 0.87
    assert general["ece"] <= 0.15


def test_evaluation_meets_the_in_domain_target(sentiment) -> None:  # type: ignore[no-untyped-def]
    """The issue's 0.78 / 0.76 (measured 0.7807 / 0.7656 with the word CNN asked for 38% of
    the tweets), what the word CNN adds to the linear model alone (0.7662 / 0.7522), and
    what asking it only when unsure gives up against the blend on every text (0.7813 /
    0.7662)."""
    evaluation = sentiment.info()["evaluation"]
    assert evaluation["accuracy"] >= 0.78 and evaluation["macro_f1"] >= 0.76
    assert 0.25 < evaluation["cnn_share"] < 0.5
    alone, always = evaluation["linear_alone"], evaluation["blend_always"]
    assert evaluation["accuracy"] >= alone["accuracy"] + 0.01
    assert evaluation["macro_f1"] >= alone["macro_f1"] + 0.01
    assert evaluation["accuracy"] >= always["accuracy"] - 0.002
    assert evaluation["general"]["accuracy"] >= always["general"]["accuracy"] - 0.01


@pytest.mark.xfail(strict=True, reason="in-domain 0.7662 / 0.7522: the linear model alone "
                                       "stays below the issue's 0.78 / 0.76 (the word CNN, "
                                       "asked where it is unsure, takes it there)")
def test_the_linear_model_alone_meets_the_in_domain_target(linear) -> None:  # type: ignore[no-untyped-def]
    evaluation = linear.info()["evaluation"]
    assert evaluation["accuracy"] >= 0.78 and evaluation["macro_f1"] >= 0.76


def test_every_shipped_example_gets_its_label(sentiment) -> None:  # type: ignore[no-untyped-def]
    """The model's own examples (REST docs, CLI, warm-up) and the page's example buttons."""
    shipped = {**EXAMPLES, **TEXT_LABELS}
    assert {q.text for q in sentiment.examples()} <= set(shipped)
    assert {text: sentiment.predict_one(text).sentiment for text in shipped} == shipped


# -- input rules ----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "fragment"), [
    pytest.param("", "empty", id="empty"),
    pytest.param("   \n\t ", "empty", id="whitespace"),
    pytest.param(None, "must be a string", id="none"),
    pytest.param(42, "must be a string", id="number"),
    pytest.param(["text"], "must be a string", id="list"),
    pytest.param(b"bytes", "must be a string", id="bytes"),
    pytest.param("x" * 5001, "limit is 5000", id="too-long"),
])
def test_invalid_input_names_the_problem(sentiment, text: object, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        sentiment.predict_one(text)
    assert fragment in caught.value.message
    assert caught.value.field == "text"


@pytest.mark.parametrize("text", [
    pytest.param("\x00\x07\x1b", id="control-characters"),
    pytest.param("\u200b\u200d\ufeff", id="format-characters"),
    pytest.param(" \u202e \u2066\u2069 ", id="direction-marks-and-spaces"),
    pytest.param("\u00ad\u180e", id="soft-hyphen-mongolian-separator"),
])
def test_text_with_nothing_printable_is_refused_like_empty_text(sentiment, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInput) as caught:
        sentiment.prepare(SentimentQuery(text))
    assert caught.value.field == "text" and "no printable characters" in caught.value.message
    assert sentiment.prepare(SentimentQuery(text + "ok"))[0] == text + "ok"
    assert re.search(PRINTABLE, text) is None  # the schema's pattern says the same


def test_limit_comes_from_settings(settings: Settings) -> None:
    model = build(settings.replace(max_text_chars=10), ArtifactStore(settings.cache_dir))
    with pytest.raises(InvalidInput):
        model.predict_one("longer than ten")


# -- artifact cache -------------------------------------------------------------------------

def test_cached_artifact_is_reused(settings: Settings, sentiment,  # type: ignore[no-untyped-def]
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A second build loads the cached model: it trains nothing, rewrites nothing and
    answers as the first."""
    store = ArtifactStore(settings.cache_dir)
    before = store.path("sentiment-cnn").read_bytes()

    def no_training(*args: object) -> None:
        raise AssertionError("the cached artifact was not reused: training ran")

    monkeypatch.setattr("ml.sentiment.train", no_training)
    again = build(settings, store)
    assert store.path("sentiment-cnn").read_bytes() == before
    assert again.evaluation == sentiment.evaluation
    texts = ["I love it", "terrible service", "the bus comes at nine"]
    assert np.array_equal(again.probabilities(texts), sentiment.probabilities(texts))


def test_corrupted_artifact_is_rebuilt(settings: Settings, sentiment, tmp_path: Path,  # type: ignore[no-untyped-def]
                                       caplog: pytest.LogCaptureFixture) -> None:
    store = ArtifactStore(tmp_path)
    shutil.copy(ArtifactStore(settings.cache_dir).path("sentiment-cnn"),
                store.path("sentiment-cnn"))
    blob = store.path("sentiment-cnn").read_bytes()
    store.path("sentiment-cnn").write_bytes(blob[: len(blob) // 3])
    with caplog.at_level(logging.WARNING):
        rebuilt = build(settings.replace(cache_dir=tmp_path), store)
    assert "rebuilding" in caplog.text
    # Training runs on one BLAS thread, so the rebuilt model equals the original whatever
    # thread settings the process has by now (the recommender pins OpenBLAS, say).
    texts = ["I love it", "terrible service", "the bus comes at nine"]
    assert np.abs(rebuilt.probabilities(texts) - sentiment.probabilities(texts)).max() < 1e-9
    assert rebuilt.evaluation == sentiment.evaluation
