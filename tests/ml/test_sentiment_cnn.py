"""The distilled word CNN: the numpy serving code against torch's network, and the windows
its explanations name."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from ml.sentiment import load_corpus
from ml.sentiment_cnn import WordCNN
from ml.sentiment_text import tokens
from tests.ml.cnn_reference import reference_logits

EDGES = ["", "zzzz qqqq", "good", "not bad", "!!", "a a a a", "great 😍 not bad at all",
         "ᚠᚢᚦ ᚨᚱᚲ", "qqqq good qqqq", "good " * 200]


@pytest.fixture(scope="module")
def cnn() -> WordCNN:
    return WordCNN.load()


@pytest.fixture(scope="module")
def sample() -> list[str]:
    texts, _ = load_corpus()
    return [*texts[::41][:800], *EDGES]


def test_logits_equal_the_torch_network(cnn: WordCNN, sample: list[str],
                                        torch_module: ModuleType) -> None:
    """One text at a time, a batch, and batches whose texts have no known word between
    texts that have (the end and padding rows must keep texts apart)."""
    expected = reference_logits(torch_module, sample)
    docs = [tokens(text) for text in sample]
    assert np.abs(cnn.logits(docs) - expected).max() < 1e-9
    single = np.vstack([cnn.logits([d]) for d in docs])
    assert np.abs(single - expected).max() < 1e-9
    mixed = [docs[-3], docs[0], docs[-8], docs[-9], docs[1]]
    assert np.abs(cnn.logits(mixed) - expected[[-3, 0, -8, -9, 1]]).max() < 1e-9
    assert np.ptp(expected[:800], axis=0).min() > 1.0  # the network reads the texts


def test_a_text_without_a_known_word_is_one_blank_token(cnn: WordCNN,
                                                        torch_module: ModuleType) -> None:
    """As in training: every window of every width exists, and only the biases fire."""
    blank = reference_logits(torch_module, ["ᚠᚢᚦ"])
    assert np.abs(cnn.logits([[]]) - blank).max() < 1e-9
    assert np.abs(cnn.logits([["ᚠᚢᚦ", "zzzz"]]) - blank).max() < 1e-9


def test_strongest_windows_add_up_to_the_logits(cnn: WordCNN, sample: list[str]) -> None:
    """Each firing filter's strongest window, with the head's intercept, gives the logits;
    a window's words are neighbours in the text, at most three of them."""
    for text in [*sample[:150], *EDGES]:
        words = tokens(text)
        windows = cnn.strongest(words)
        total = cnn.intercept + sum((w.logits for w in windows), np.zeros(3))
        assert np.abs(total - cnn.logits([words])[0]).max() < 1e-9
        known = [w for w in words if w in cnn.index]
        for window in windows:
            assert len(window.words) <= 3
            if window.words:
                span = list(window.words)
                assert any(known[i:i + len(span)] == span for i in range(len(known)))
            else:
                assert not known  # only a text without known words has a blank window


def test_weights_are_the_shipped_network(cnn: WordCNN) -> None:
    assert len(cnn.index) > 10_000 and cnn.filters == 32
    assert {"good", "bad", "not_bad", "!"} <= set(cnn.index)
    assert cnn.table.shape == (len(cnn.index) + 4, 6 * 32) and np.isfinite(cnn.table).all()
