"""The fitted sentiment pipeline's logits without scikit-learn: each feature block turned into
logit contributions directly, so one text costs a tokenisation, a few dictionary look-ups and
one small gather (~30 us, where the pipeline's `predict_proba` takes ~1 ms). The same numbers
as the pipeline within 1e-9 (tests/ml/test_sentiment.py).

- Word 1-2-grams (TF-IDF, sublinear tf, l2 norm): a table holds each gram's idf-scaled class
  weights and its squared idf, so the weighted sum and the norm come from one gather.
- Spelling: additive over words, so each distinct word's contribution (its n-gram vector
  times the class weights) is found once and kept; the training words are found at load.
- Lexicon: four features times their class weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain, pairwise

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import normalize

from ml.sentiment_text import (
    LEXICON_TERMS,
    LexiconFeatures,
    SpellingFeatures,
    pool_words,
    spelled,
    tokens,
)

BLOCKS = ("words", "spelling", "lexicon")  # the feature union's steps, in order
WORDS_CACHED = 1 << 16  # words outside the training vocabulary whose contribution is kept
SPELLING = "spelling: "  # prefix of a word's spelling in explanations

Logits = tuple[float, float, float]


class Scorer:
    """Logits, and per-term contributions for explanations, of a fitted pipeline."""

    def __init__(self, pipeline: Pipeline) -> None:
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
        self.intercept: Logits = tuple(clf.intercept_.tolist())  # type: ignore[assignment]
        # words: the vocabulary, and per gram [idf * weights of each class, idf^2]
        self.vocab: dict[str, int] = words.vocabulary_
        self.grams = np.array(words.get_feature_names_out(), dtype=object)
        idf = words.idf_.astype(np.float64)
        self.idf, self.word_coef = idf, word_coef
        self.word_table = np.column_stack([word_coef * idf[:, None], idf * idf])
        # spelling: each word's contribution, for the training words now, others when seen
        self.spelling = spelling
        self.spelling_coef = np.ascontiguousarray(spelling_coef)
        self.ngram_range: tuple[int, int] = spelling.tfidf_.ngram_range
        self.ngram_ids: dict[str, int] = spelling.tfidf_.vocabulary_
        self.ngram_idf = spelling.tfidf_.idf_.astype(np.float64)
        known = list(spelling.words_)
        self.known: dict[str, Logits] = dict(zip(known, map(tuple, (
            spelling.vectors(known) @ self.spelling_coef).tolist()), strict=True))
        self._spell = lru_cache(maxsize=WORDS_CACHED)(self._unseen)
        # lexicon: the scaled features' class weights
        self.lexicon = lexicon.lexicon_
        self.lexicon_coef: list[Logits] = [tuple(row) for row in
                                           (lexicon_coef * lexicon.scale).tolist()]

    # -- one text -------------------------------------------------------------------------
    def logits(self, text: str) -> Logits:
        """The classifier's logits for one text."""
        words = tokens(text)
        z0, z1, z2 = self.intercept
        ids = self._gram_ids(words)
        if ids:
            a, b, c, square = self._word_sums(ids)
            norm = math.sqrt(square)
            z0, z1, z2 = z0 + a / norm, z1 + b / norm, z2 + c / norm
        spelling = spelled(text)
        if spelling:
            known, spell = self.known.get, self._spell
            a = b = c = 0.0
            for word in spelling:
                v = known(word) or spell(word)
                a, b, c = a + v[0], b + v[1], c + v[2]
            pool = 1.0 / math.sqrt(len(spelling))
            z0, z1, z2 = z0 + a * pool, z1 + b * pool, z2 + c * pool
        for value, (a, b, c) in zip(self.lexicon.features(words), self.lexicon_coef,
                                    strict=True):
            if value:
                z0, z1, z2 = z0 + value * a, z1 + value * b, z2 + value * c
        return z0, z1, z2

    def terms(self, text: str) -> tuple[list[str], np.ndarray]:
        """Each term of `text` (word gram, a word's spelling, lexicon feature) and its logit
        contribution per class, one row each: with the intercept they sum to `logits`."""
        words = tokens(text)
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
        return names, np.vstack(rows)

    # -- many texts -----------------------------------------------------------------------
    def logits_many(self, texts: Sequence[str]) -> np.ndarray:
        """(texts, classes) logits, vectorised over the texts."""
        words = [tokens(text) for text in texts]
        found = [self._gram_ids(w) for w in words]
        indptr = np.cumsum([0, *map(len, found)])
        counts = sparse.csr_matrix(
            (np.ones(int(indptr[-1])), np.fromiter(chain.from_iterable(found), dtype=np.intp,
                                                   count=int(indptr[-1])), indptr),
            shape=(len(texts), len(self.vocab)))
        counts.sum_duplicates()
        counts.data = (np.log(counts.data) + 1.0) * self.idf[counts.indices]
        logits = np.asarray(normalize(counts, copy=False) @ self.word_coef)
        pooling, spelling = pool_words(texts)
        vectors = np.array([self.known.get(w) or self._spell(w) for w in spelling])
        logits += pooling @ vectors.reshape(-1, 3)
        lexicon = np.array([self.lexicon.features(w) for w in words]).reshape(-1, 4)
        logits += lexicon @ np.array(self.lexicon_coef)
        out: np.ndarray = logits + np.array(self.intercept)
        return out

    # -- internals ------------------------------------------------------------------------
    def _gram_ids(self, words: list[str]) -> list[int]:
        vocab = self.vocab
        return [i for i in map(vocab.get, chain(words, map(" ".join, pairwise(words))))
                if i is not None]

    def _word_sums(self, ids: list[int]) -> list[float]:
        """[sum of tf-idf times each class weight (3), sum of squared tf-idf] of a text's
        gram ids, repeats included (sublinear tf: 1 + log count)."""
        table = self.word_table
        sums: list[float] = np.add.reduce(table.take(ids, axis=0), axis=0).tolist()
        if len(set(ids)) < len(ids):  # a repeated gram weighs 1 + log n, not n: correct it
            counts: dict[int, int] = {}
            for i in ids:
                counts[i] = counts.get(i, 0) + 1
            for i, n in counts.items():
                if n > 1:
                    tf = 1.0 + math.log(n)
                    a, b, c, square = table[i].tolist()
                    sums[0] += (tf - n) * a
                    sums[1] += (tf - n) * b
                    sums[2] += (tf - n) * c
                    sums[3] += (tf * tf - n) * square
        return sums

    def _unseen(self, word: str) -> Logits:
        """A word's spelling contribution, from its n-grams (the vectoriser's transform of
        one word: sublinear tf, idf, l2 norm)."""
        counts: dict[int, int] = {}
        for i in map(self.ngram_ids.get, char_ngrams(word, *self.ngram_range)):
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        if not counts:
            return 0.0, 0.0, 0.0
        ids = np.fromiter(counts, dtype=np.intp, count=len(counts))
        weights = (np.log(np.fromiter(counts.values(), dtype=np.float64)) + 1.0
                   ) * self.ngram_idf[ids]
        weights /= math.sqrt(float(weights @ weights))
        a, b, c = (weights @ self.spelling_coef[ids]).tolist()
        return a, b, c


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
