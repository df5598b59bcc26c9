"""What the sentiment model reads in a text: tokens with the scope of a negation marked, and
lexicon features from VADER's hand-rated word list (vaderSentiment, MIT).

Tweets teach a bag of words which topics people complain about; they teach little about the
words of a restaurant review or a product page. VADER's lexicon (7,500 words and emoji rated
-4..+4 by people) carries that general knowledge into the model as a few dense features, and
negation marking lets "not good" and "not bad" be words of their own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import chain, pairwise
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import normalize

URL = re.compile(r"https?://\S+|www\.\S+")
MENTION = re.compile(r"@\w+")
# Emoji and pictographs: one token each (most emoji carry more sentiment than the words).
EMOJI = "\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2300-\u23ff"
TOKEN = re.compile(r"[^\W_][\w']*|[!?]|[.,;:]|[" + EMOJI + "]")
# A negation's scope ends at punctuation or at a word that turns the sentence.
SCOPE_ENDS = frozenset({".", ",", ";", ":", "!", "?", "but", "however", "although", "though",
                        "yet", "except"})
PUNCTUATION = frozenset({".", ",", ";", ":"})
NEGATED = "not_"  # prefix of a word inside a negation's scope
# VADER's constants: a negated word's valence is scaled by N_SCALAR; words before "but" count
# half and after it one and a half.
N_SCALAR = -0.74
BEFORE_BUT, AFTER_BUT = 0.5, 1.5
# Names of the lexicon features (in explanations too).
LEXICON_TERMS = ("lexicon: positive words", "lexicon: negative words", "lexicon: overall tone",
                 "lexicon: any rated word")
SORT_FROM = 64  # terms of a text from which counting by sorting beats a dict
WORDS_CACHED = 1 << 16  # distinct words whose character n-grams the single-text path keeps
ALPHA = 15.0  # VADER's normalisation of a sum of valences into (-1, 1)


@cache
def negators() -> frozenset[str]:
    """VADER's negation words, with and without apostrophes, plus a few it lacks."""
    from vaderSentiment.vaderSentiment import NEGATE

    return frozenset(NEGATE) | {"no", "nobody", "noone", "nor", "hardly", "n't"}


def tokens(text: str) -> list[str]:
    """Lower-cased words, '!', '?' and emoji of `text`; links and @mentions become 'url' and
    'user'; a word inside a negation's scope gets the prefix 'not_'."""
    text = MENTION.sub(" user ", URL.sub(" url ", text.lower()))
    out: list[str] = []
    negate = negators()
    scoped = False
    for token in TOKEN.findall(text):
        if token in SCOPE_ENDS:
            scoped = False
            if token in PUNCTUATION:
                continue
        elif scoped and token not in negate:
            token = NEGATED + token
        elif token in negate or token.endswith("n't"):
            scoped = True
        out.append(token)
    return out


def word_grams(text: str) -> list[str]:
    """The tokens of `text` and each pair of neighbours: the word analyzer of the model."""
    words = tokens(text)
    return words + [f"{a} {b}" for a, b in pairwise(words)]


def vader_lexicon_path() -> Path:
    """VADER's word list inside the installed package."""
    from vaderSentiment import vaderSentiment as vader

    return Path(vader.__file__).parent / "vader_lexicon.txt"


@dataclass(frozen=True)
class Lexicon:
    """Valences of words and emoji (-4..+4) and the boosters that scale the next word."""

    valence: dict[str, float]
    boosters: dict[str, float]

    @classmethod
    def from_vader(cls) -> Lexicon:
        """VADER's word list, its emoji (rated through the words of their names) and its
        boosters ('very' +0.293, 'slightly' -0.293), read from the installed package."""
        from vaderSentiment import vaderSentiment as vader

        folder = vader_lexicon_path().parent
        valence: dict[str, float] = {}
        for line in (folder / "vader_lexicon.txt").read_text(encoding="utf-8").splitlines():
            fields = line.split("\t")
            if len(fields) >= 2 and " " not in fields[0]:
                valence[fields[0]] = float(fields[1])
        emoji: dict[str, float] = {}
        for line in (folder / "emoji_utf8_lexicon.txt").read_text(encoding="utf-8").splitlines():
            symbol, _, name = line.partition("\t")
            rated = [valence[w] for w in name.split() if w in valence]
            if len(symbol) == 1 and rated:  # one code point: what the tokenizer yields
                emoji[symbol] = sum(rated) / len(rated)
        return cls(valence={**valence, **emoji}, boosters=dict(vader.BOOSTER_DICT))

    def features(self, words: Sequence[str]) -> list[float]:
        """[positive, negative, compound, rated]: the sums of positive and of negative
        valences (negation flips and shrinks a word, a booster scales it, words before 'but'
        count half), their VADER compound in (-1, 1), and whether any word was rated."""
        valence, boosters = self.valence, self.boosters
        turn = _last(words, "but")
        positive = negative = 0.0
        rated = 0.0
        previous = ""
        for i, word in enumerate(words):
            negated = word.startswith(NEGATED)
            base = word[len(NEGATED):] if negated else word
            value = valence.get(base)
            if value is not None and value != 0.0:
                boost = boosters.get(previous.removeprefix(NEGATED))
                if boost is not None:
                    value += math.copysign(boost, value)
                if negated:
                    value *= N_SCALAR
                if turn >= 0:
                    value *= BEFORE_BUT if i < turn else AFTER_BUT
                if value > 0:
                    positive += value
                else:
                    negative -= value
                rated = 1.0
            previous = word
        total = positive - negative
        return [positive, negative, total / math.sqrt(total * total + ALPHA), rated]


def _last(words: Sequence[str], word: str) -> int:
    for i in range(len(words) - 1, -1, -1):
        if words[i] == word:
            return i
    return -1


class LexiconFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A scikit-learn transformer: the lexicon features of each text, times `scale` (a
    larger scale makes them cheaper for an L2-penalised model to lean on)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def fit(self, texts: Sequence[str], labels: object = None) -> LexiconFeatures:
        self.lexicon_ = Lexicon.from_vader()
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        rows = [self.lexicon_.features(tokens(text)) for text in texts]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), 4) * self.scale

    def get_feature_names_out(self, names: object = None) -> np.ndarray:
        return np.array(LEXICON_TERMS, dtype=object)


class UnionFeatures:
    """The fitted feature union's transform without scikit-learn's per-call overhead (~1 ms)
    and with each distinct word's character n-grams found once: the same columns and values
    (TF-IDF blocks with sublinear tf, idf and l2 norm each; the scaled lexicon features)."""

    def __init__(self, union: FeatureUnion) -> None:
        self.blocks: list[TfidfBlock] = []
        names: list[str] = []
        steps = union.transformer_list
        for name, step in steps[:-1]:
            if not isinstance(step, TfidfVectorizer):
                raise ValueError(f"no fast transform for feature step {name!r}")
            self.blocks.append(TfidfBlock(step, len(names), words=name == "words"))
            names += step.get_feature_names_out().tolist()
        lexicon = steps[-1][1]
        if not isinstance(lexicon, LexiconFeatures):
            raise ValueError("the union's last step must be the lexicon features")
        self.lexicon, self.scale = lexicon.lexicon_, lexicon.scale
        self.lexicon_ids = np.arange(len(names), len(names) + len(LEXICON_TERMS))
        self.names = names + list(LEXICON_TERMS)

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Columns and values of the non-zero features of one text."""
        words = tokens(text)
        grams = [*words, *(f"{a} {b}" for a, b in pairwise(words))]
        rows = [block.row(block.columns(text, grams)) for block in self.blocks]
        lexicon = [v * self.scale for v in self.lexicon.features(words)]
        if any(lexicon):
            rows.append((self.lexicon_ids, np.array(lexicon)))
        return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])

    def matrix(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """The features of many texts, one row each (CSR)."""
        words = [tokens(text) for text in texts]
        grams = [[*w, *(f"{a} {b}" for a, b in pairwise(w))] for w in words]
        parts = [block.matrix([block.columns(t, g) for t, g in zip(texts, grams, strict=True)])
                 for block in self.blocks]
        lexicon = np.array([self.lexicon.features(w) for w in words]).reshape(-1, 4)
        return sparse.hstack([*parts, sparse.csr_matrix(lexicon * self.scale)], format="csr")


class TfidfBlock:
    """One fitted TF-IDF vectoriser's transform of a single text, without scikit-learn's
    per-call overhead (~1 ms): the same terms, sublinear tf, idf and l2 norm."""

    def __init__(self, tfidf: TfidfVectorizer, offset: int, *, words: bool) -> None:
        self.vocab: dict[str, int] = tfidf.vocabulary_
        self.idf = tfidf.idf_.astype(np.float64)
        self.sublinear = bool(tfidf.sublinear_tf)
        self.offset = offset  # its first column in the union
        self.words = words  # its terms are word_grams (shared with the lexicon's tokens)
        self.analyze = tfidf.build_analyzer()
        # char_wb n-grams never cross white space: a text's are the sum of its words', so
        # each distinct word is analysed once (bounded cache)
        self.per_word = tfidf.analyzer == "char_wb"
        self._known = lru_cache(maxsize=WORDS_CACHED)(self._known_terms)

    def columns(self, text: str, grams: Sequence[str]) -> list[int]:
        """The block's columns of each known term of `text`, repeats included; `grams` are
        its word_grams."""
        if self.per_word:
            return list(chain.from_iterable(map(self._known, text.split())))
        vocab = self.vocab
        return [i for i in map(vocab.get, grams if self.words else self.analyze(text))
                if i is not None]

    def row(self, found: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Columns (in the union) and TF-IDF weights of one text's `columns`."""
        if not found:
            return np.empty(0, dtype=np.intp), np.empty(0)
        if len(found) > SORT_FROM:  # hundreds of n-grams: counted by sorting
            array = np.array(found, dtype=np.intp)
            array.sort()
            edges = np.flatnonzero(np.r_[True, array[1:] != array[:-1], True])
            ids, tf = array[edges[:-1]], np.diff(edges).astype(np.float64)
        else:  # a few dozen terms: counted in a dict
            counts: dict[int, int] = {}
            for index in found:
                counts[index] = counts.get(index, 0) + 1
            ids = np.fromiter(counts, dtype=np.intp, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        if self.sublinear:
            tf = np.log(tf) + 1.0
        weights = tf * self.idf[ids]
        weights /= math.sqrt(float(weights @ weights))
        return ids + self.offset, weights

    def matrix(self, found: Sequence[Sequence[int]]) -> sparse.csr_matrix:
        """TF-IDF rows (this block's columns) of many texts' `columns`."""
        indptr = np.cumsum([0, *map(len, found)])
        indices = np.fromiter(chain.from_iterable(found), dtype=np.intp, count=int(indptr[-1]))
        counts = sparse.csr_matrix((np.ones(len(indices)), indices, indptr),
                                   shape=(len(found), len(self.vocab)))
        counts.sum_duplicates()
        if self.sublinear:
            counts.data = np.log(counts.data) + 1.0
        counts.data *= self.idf[counts.indices]
        return normalize(counts, copy=False)

    def _known_terms(self, word: str) -> tuple[int, ...]:
        return tuple(i for i in map(self.vocab.get, self.analyze(word)) if i is not None)
