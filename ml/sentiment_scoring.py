"""The served sentiment model's logits without scikit-learn: each feature block of the fitted
pipeline turned into logit contributions directly, so a text costs a tokenisation, a few
dictionary look-ups and its share of one small gather (~30 us, where the pipeline's
`predict_proba` takes ~1 ms); with ML_SENTIMENT_CNN=true, blended with the distilled word
CNN's logits (ml.sentiment_cnn) on the same tokens. The same numbers as the pipeline and the torch
network within 1e-9 (tests/ml/test_sentiment.py).

- Word 1-2-grams (TF-IDF, sublinear tf, l2 norm): a table holds each gram's idf-scaled class
  weights and its squared idf, so a text's weighted sum and its norm are one sum of rows; the
  rows of every text of a batch are gathered and summed in one numpy call.
- Spelling: additive over words, so each distinct word's contribution (its n-gram vector
  times the class weights) is found once and kept, the training words' at load; an unseen
  word's n-grams are summed from a table like the words'.
- Lexicon: four features times their class weights.
- The word CNN: averaged with the linear model in log-probabilities, which for a softmax is
  the average of the two logits (CNN_WEIGHT, chosen on validation tweets), for the texts the
  linear model is unsure of (top probability below CNN_GATE). What the CNN adds lies there:
  where the linear model is sure, the blend almost never answers otherwise (it agrees with
  the blend on 99.9% of the training tweets at the gate), so the CNN runs for ~38% of texts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from itertools import accumulate, chain, pairwise

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from ml.sentiment_cnn import BLANK, PHRASE, WordCNN
from ml.sentiment_text import (
    LEXICON_TERMS,
    LexiconFeatures,
    SpellingFeatures,
    spelled,
    tokens,
)

BLOCKS = ("words", "spelling", "lexicon")  # the feature union's steps, in order
WORDS_CACHED = 1 << 16  # words outside the training vocabulary whose contribution is kept
SPELLING = "spelling: "  # prefix of a word's spelling in explanations
CNN_WEIGHT = 0.5  # the word CNN's share of the blended logits
# The word CNN runs for a text when the linear model's top probability is below this: the
# lowest gate (in steps of 0.05) whose labels agree with the blend's on >= 99.9% of the
# training tweets (README, "gated blend").
CNN_GATE = 0.75

Logits = tuple[float, float, float]


class Scorer:
    """Logits, and per-term contributions for explanations, of a fitted pipeline blended
    with a word CNN (none: the pipeline alone)."""

    def __init__(self, pipeline: Pipeline, cnn: WordCNN | None = None,
                 cnn_weight: float = CNN_WEIGHT, gate: float = CNN_GATE) -> None:
        union: FeatureUnion = pipeline.named_steps["features"]
        clf: LogisticRegression = pipeline.named_steps["clf"]
        steps = dict(union.transformer_list)
        if tuple(steps) != BLOCKS:
            raise ValueError(f"feature steps {tuple(steps)}; the scorer serves {BLOCKS}")
        words, spelling, lexicon = (steps[name] for name in BLOCKS)
        if not (isinstance(words, TfidfVectorizer) and isinstance(spelling, SpellingFeatures)
                and isinstance(lexicon, LexiconFeatures)):
            raise ValueError("unexpected feature step types")
        coef = np.asarray(clf.coef_, dtype=np.float64).T  # (features, classes)
        sizes = np.cumsum([len(words.vocabulary_), len(spelling.tfidf_.vocabulary_)])
        if coef.shape[0] != sizes[-1] + len(LEXICON_TERMS):
            raise ValueError(f"{coef.shape[0]} weights for {sizes[-1] + 4} features")
        word_coef, spelling_coef, lexicon_coef = np.split(coef, sizes)
        self.linear_intercept: Logits = tuple(clf.intercept_.tolist())  # type: ignore[assignment]
        self.cnn = cnn
        # the CNN runs when the linear softmax's sum of exp(z - max z) exceeds 1 / gate
        # (above 1: every text; a gate of 1 or more: the CNN always runs)
        self.gate = gate
        self._spread = 1.0 / gate if gate < 1.0 else 1.0
        self.mix = (1.0 - cnn_weight, cnn_weight) if cnn is not None else (1.0, 0.0)
        self.cnn_intercept: Logits = tuple(  # type: ignore[assignment]
            (cnn_weight * cnn.intercept).tolist() if cnn is not None else (0.0, 0.0, 0.0))
        # the blended model's intercept: a blended text's terms (`terms`) plus this are its
        # logits
        self.intercept: Logits = tuple(  # type: ignore[assignment]
            self.mix[0] * a + c
            for a, c in zip(self.linear_intercept, self.cnn_intercept, strict=True))
        # words: the vocabulary, and per gram [idf * weights of each class, idf^2]
        self.vocab: dict[str, int] = words.vocabulary_
        self.grams = np.array(words.get_feature_names_out(), dtype=object)
        idf = words.idf_.astype(np.float64)
        self.idf, self.word_coef = idf, word_coef
        self.word_table = weighted_rows(word_coef, idf)
        # spelling: each word's contribution, for the training words now, others when seen
        self.ngram_range: tuple[int, int] = spelling.tfidf_.ngram_range
        self.ngram_ids: dict[str, int] = spelling.tfidf_.vocabulary_
        self.ngram_table = weighted_rows(spelling_coef, spelling.tfidf_.idf_)
        known = list(spelling.words_)
        self.known: dict[str, Logits] = dict(zip(known, map(tuple, (
            spelling.vectors(known) @ spelling_coef).tolist()), strict=True))
        self._spell = lru_cache(maxsize=WORDS_CACHED)(self._unseen)
        # lexicon: the scaled features' class weights
        self.lexicon = lexicon.lexicon_
        self.lexicon_coef: list[Logits] = [tuple(row) for row in
                                           (lexicon_coef * lexicon.scale).tolist()]

    def logits(self, texts: Sequence[str]) -> list[Logits]:
        """The served model's logits for each text: the linear model's, blended with the
        word CNN's for the texts the linear model is unsure of."""
        words = [tokens(text) for text in texts]
        out = self._linear(texts, words)
        if self.cnn is None:
            return out
        unsure = [k for k, z in enumerate(out) if self.unsure(z)]
        if not unsure:
            return out
        h, w = self.mix
        i, j, k = self.cnn_intercept
        for row, (x, y, z) in zip(unsure, self.cnn.scores([words[r] for r in unsure]),
                                  strict=True):
            a, b, c = out[row]
            out[row] = (h * a + w * x + i, h * b + w * y + j, h * c + w * z + k)
        return out

    def blended(self, texts: Sequence[str]) -> list[bool]:
        """For each text, whether the word CNN runs for it (the linear model is unsure)."""
        if self.cnn is None:
            return [False] * len(texts)
        return [self.unsure(z) for z in self._linear(texts, [tokens(t) for t in texts])]

    def unsure(self, linear: Logits) -> bool:
        """Whether the linear model's top probability for these logits is below the gate,
        so that the word CNN is asked too."""
        a, b, c = linear
        top = max(a, b, c)
        return math.exp(a - top) + math.exp(b - top) + math.exp(c - top) > self._spread

    def terms(self, text: str) -> tuple[list[str], np.ndarray, Logits]:
        """Each term of `text` (word gram, a word's spelling, lexicon feature; a phrase that
        the word CNN's filters picked, when it ran) and its logit contribution per class, one
        row each, and the intercept: together they sum to `logits`."""
        words = tokens(text)
        blended = self.cnn is not None and self.unsure(self._linear([text], [words])[0])
        names: list[str] = []
        rows: list[np.ndarray] = []
        ids = self._gram_ids(words)
        if ids:
            counts: dict[int, int] = {}
            for i in ids:
                counts[i] = counts.get(i, 0) + 1
            unique = np.fromiter(counts, dtype=np.intp, count=len(counts))
            weights = (np.log(np.fromiter(counts.values(), dtype=np.float64)) + 1.0
                       ) * self.idf[unique]
            weights /= math.sqrt(float(weights @ weights))
            names += self.grams[unique].tolist()
            rows.append(weights[:, None] * self.word_coef[unique])
        spelling = spelled(text)
        if spelling:
            times: dict[str, int] = {}
            for word in spelling:
                times[word] = times.get(word, 0) + 1
            pool = 1.0 / math.sqrt(len(spelling))
            names += [SPELLING + word for word in times]
            rows.append(np.array([self.known.get(w) or self._spell(w) for w in times])
                        * (np.fromiter(times.values(), dtype=np.float64) * pool)[:, None])
        lexicon = self.lexicon.features(words)
        rated = [i for i, value in enumerate(lexicon) if value]
        names += [LEXICON_TERMS[i] for i in rated]
        rows.append(np.array([[lexicon[i] * w for w in self.lexicon_coef[i]] for i in rated]
                             ).reshape(-1, 3))
        linear = np.vstack(rows)
        if not blended or self.cnn is None:
            return names, linear, self.linear_intercept
        phrases: dict[str, np.ndarray] = {}  # the filters that picked the same phrase, summed
        for window in self.cnn.strongest(words):
            name = PHRASE + " ".join(window.words) if window.words else BLANK
            phrases[name] = phrases.get(name, np.zeros(3)) + window.logits
        names += list(phrases)
        return names, np.vstack([linear * self.mix[0],
                                 *(v * self.mix[1] for v in phrases.values())]), self.intercept

    # -- internals ------------------------------------------------------------------------
    def _linear(self, texts: Sequence[str], words: list[list[str]]) -> list[Logits]:
        """The linear model's logits for each text, given its tokens."""
        found = [self._gram_ids(w) for w in words]
        out: list[Logits] = []
        known, spell = self.known.get, self._spell
        for text, tokenised, sums in zip(texts, words, row_sums(self.word_table, found),
                                         strict=True):
            z0, z1, z2 = self.linear_intercept
            if sums is not None:
                a, b, c, square = sums
                norm = math.sqrt(square)
                z0, z1, z2 = z0 + a / norm, z1 + b / norm, z2 + c / norm
            spelling = spelled(text)
            if spelling:
                a = b = c = 0.0
                for word in spelling:
                    v = known(word) or spell(word)
                    a, b, c = a + v[0], b + v[1], c + v[2]
                pool = 1.0 / math.sqrt(len(spelling))
                z0, z1, z2 = z0 + a * pool, z1 + b * pool, z2 + c * pool
            for value, (a, b, c) in zip(self.lexicon.features(tokenised), self.lexicon_coef,
                                        strict=True):
                if value:
                    z0, z1, z2 = z0 + value * a, z1 + value * b, z2 + value * c
            out.append((z0, z1, z2))
        return out

    def _gram_ids(self, words: list[str]) -> list[int]:
        vocab = self.vocab
        return [i for i in map(vocab.get, chain(words, map(" ".join, pairwise(words))))
                if i is not None]

    def _unseen(self, word: str) -> Logits:
        """A word's spelling contribution, from its n-grams (the vectoriser's transform of
        one word: sublinear tf, idf, l2 norm)."""
        get = self.ngram_ids.get
        ids = [i for i in map(get, char_ngrams(word, *self.ngram_range)) if i is not None]
        sums = row_sums(self.ngram_table, [ids])[0]
        if sums is None:
            return 0.0, 0.0, 0.0
        a, b, c, square = sums
        norm = math.sqrt(square)
        return a / norm, b / norm, c / norm


def weighted_rows(coef: np.ndarray, idf: np.ndarray) -> np.ndarray:
    """Per term, its class weights times its idf and its squared idf: a text's sum of these
    rows (tf 1) is its TF-IDF vector's dot with each class's weights and its squared norm."""
    idf = np.asarray(idf, dtype=np.float64)
    return np.column_stack([coef * idf[:, None], idf * idf])


def row_sums(table: np.ndarray, found: Sequence[list[int]]) -> list[list[float] | None]:
    """For each list of term ids, the sum of its terms' `weighted_rows`, each term weighing
    1 + log(its count) (sublinear tf); None for an empty list. One gather for all lists."""
    if len(found) == 1:  # the hot path: one text, no segments
        ids = found[0]
        if not ids:
            return [None]
        total: list[float] = np.add.reduce(table.take(ids, axis=0), axis=0).tolist()
        if len(set(ids)) < len(ids):
            _sublinear(table, ids, total)
        return [total]
    taken = [k for k, ids in enumerate(found) if ids]
    out: list[list[float] | None] = [None] * len(found)
    if not taken:
        return out
    rows = table.take(list(chain.from_iterable(found[k] for k in taken)), axis=0)
    starts = list(accumulate((len(found[k]) for k in taken[:-1]), initial=0))
    sums: list[list[float]] = np.add.reduceat(rows, starts, axis=0).tolist()
    for k, total in zip(taken, sums, strict=True):
        ids = found[k]
        if len(set(ids)) < len(ids):  # a repeated term weighs 1 + log n, not n: correct it
            _sublinear(table, ids, total)
        out[k] = total
    return out


def _sublinear(table: np.ndarray, ids: list[int], total: list[float]) -> None:
    counts: dict[int, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    for i, n in counts.items():
        if n > 1:
            tf = 1.0 + math.log(n)
            a, b, c, square = table[i].tolist()
            total[0] += (tf - n) * a
            total[1] += (tf - n) * b
            total[2] += (tf - n) * c
            total[3] += (tf * tf - n) * square


def char_ngrams(word: str, low: int, high: int) -> list[str]:
    """scikit-learn's char_wb n-grams of one word without white space: the word padded
    with a space each side, `low` to `high` characters; a padded word shorter than an n
    gives itself once."""
    padded = f" {word} "
    size = len(padded)
    if size <= low:
        return [padded]
    return [padded[i:i + n] for n in range(low, min(high, size) + 1)
            for i in range(size - n + 1)]
