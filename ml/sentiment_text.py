"""What the sentiment model reads in a text: tokens with the scope of a negation marked, and
lexicon features from VADER's hand-rated word list (vaderSentiment, MIT), and how its words
are spelled.

Tweets teach a bag of words which topics people complain about; they teach little about the
words of a restaurant review or a product page. VADER's lexicon (7,500 words and emoji rated
-4..+4 by people) carries that general knowledge into the model as a few dense features, and
negation marking lets "not good" and "not bad" be words of their own. Spelling (character
n-grams) carries what a word's parts say: "loveliest", "unhelpful", "sooo" and typos share
n-grams with words the tweets taught.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from itertools import chain, pairwise
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer

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
KNOWN_FROM = 2  # texts a word appears in for serving to keep its spelling's contribution
ALPHA = 15.0  # VADER's normalisation of a sum of valences into (-1, 1)


@cache
def negators() -> frozenset[str]:
    """VADER's negation words, with and without apostrophes, plus a few it lacks."""
    from vaderSentiment.vaderSentiment import NEGATE

    return frozenset(NEGATE) | {"no", "nobody", "noone", "nor", "hardly", "n't"}


def tokens(text: str) -> list[str]:
    """Lower-cased words, '!', '?' and emoji of `text`; links and @mentions become 'url' and
    'user'; a word inside a negation's scope gets the prefix 'not_'."""
    text = text.lower()
    if "http" in text or "www." in text:  # the substitutions cost more than the tests
        text = URL.sub(" url ", text)
    if "@" in text:
        text = MENTION.sub(" user ", text)
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

    @cached_property
    def rated(self) -> dict[str, tuple[float, bool]]:
        """Each token with a valence, as the tokenizer gives it: a rated word's valence and
        False, and the same word inside a negation's scope ('not_' + word) with True."""
        rated = {w: (v, False) for w, v in self.valence.items() if v != 0.0}
        rated.update({NEGATED + w: (v, True) for w, v in self.valence.items() if v != 0.0})
        return rated

    def features(self, words: Sequence[str]) -> list[float]:
        """[positive, negative, compound, rated]: the sums of positive and of negative
        valences (negation flips and shrinks a word, a booster scales it, words before 'but'
        count half), their VADER compound in (-1, 1), and whether any word was rated."""
        rated, boosters = self.rated.get, self.boosters
        turn = _last(words, "but")
        positive = negative = 0.0
        any_rated = 0.0
        for i, word in enumerate(words):
            found = rated(word)
            if found is None:  # most words: one look-up
                continue
            value, negated = found
            if i:
                boost = boosters.get(words[i - 1].removeprefix(NEGATED))
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
            any_rated = 1.0
        total = positive - negative
        return [positive, negative, total / math.sqrt(total * total + ALPHA), any_rated]


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


def spelled(text: str) -> list[str]:
    """The words whose spelling counts: `text` lower-cased and split at white space, as
    scikit-learn's char_wb analyzer splits it (punctuation stays on its word)."""
    return text.lower().split()


def pool_words(texts: Sequence[str]) -> tuple[sparse.csr_matrix, list[str]]:
    """The distinct spelled words of `texts`, and the (texts, words) matrix that sums each
    text's words over the square root of their number (a repeated word counts each time)."""
    words = [spelled(text) for text in texts]
    index: dict[str, int] = {}
    columns = [index.setdefault(w, len(index)) for w in chain.from_iterable(words)]
    lengths = np.array([len(w) for w in words], dtype=np.intp)
    pooling = sparse.csr_matrix(
        (np.repeat(1.0 / np.sqrt(np.maximum(lengths, 1)), lengths), columns,
         np.r_[0, np.cumsum(lengths)]), shape=(len(texts), len(index)))
    return pooling, list(index)


class SpellingFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """How a text's words are spelled: each word's character n-grams (`ngram_range`, padded
    with a space each side; TF-IDF with sublinear tf, l2-normalised per word), summed over
    the text's words and divided by the square root of their number. Additive over words,
    so serving keeps one small vector per distinct word, as fastText and model2vec do with
    sub-word vectors. The idf counts a word once per text."""

    def __init__(self, ngram_range: tuple[int, int] = (2, 5), min_df: int = 3) -> None:
        self.ngram_range = ngram_range
        self.min_df = min_df

    def fit(self, texts: Sequence[str], labels: object = None) -> SpellingFeatures:
        self.tfidf_ = TfidfVectorizer(analyzer="char_wb", ngram_range=self.ngram_range,
                                      sublinear_tf=True, min_df=self.min_df, dtype=np.float64)
        words = list(chain.from_iterable(dict.fromkeys(spelled(t)) for t in texts))
        self.tfidf_.fit(words)
        # the words of at least two texts: serving finds their contributions at load
        self.words_ = sorted(w for w, n in Counter(words).items() if n >= KNOWN_FROM)
        return self

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        pooling, words = pool_words(texts)
        return sparse.csr_matrix(pooling @ self.vectors(words))

    def vectors(self, words: Sequence[str]) -> sparse.csr_matrix:
        """Each word's own l2-normalised n-gram vector, one row each."""
        if not words:
            return sparse.csr_matrix((0, len(self.tfidf_.vocabulary_)))
        return self.tfidf_.transform(words)

    def get_feature_names_out(self, names: object = None) -> np.ndarray:
        out: np.ndarray = self.tfidf_.get_feature_names_out()
        return out
