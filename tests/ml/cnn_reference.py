"""The word CNN as torch defines it (the training script's network), for the tests that
hold the numpy serving code to it: nothing here comes from ml.sentiment_cnn but the file."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np

from ml.sentiment_cnn import PATH
from ml.sentiment_text import tokens

WIDTHS = (1, 2, 3)


def reference_logits(torch: ModuleType, texts: Sequence[str]) -> np.ndarray:
    """(texts, 3) logits of the shipped weights in float64 torch: embedding (words outside
    the vocabulary dropped, the padding row for a text without a known word), a Conv1d per
    width with padding width - 1, ReLU, the maximum over each text's positions, the head."""
    with np.load(PATH, allow_pickle=False) as saved:
        vocab = str(saved["vocab"]).split("\n")
        state = {k: torch.tensor(saved[k], dtype=torch.float64)
                 for k in saved.files if k != "vocab"}
    index = {word: i + 1 for i, word in enumerate(vocab)}
    rows = [[index[w] for w in tokens(text) if w in index] or [0] for text in texts]
    batch = torch.zeros((len(rows), max(map(len, rows))), dtype=torch.int64)
    for r, row in enumerate(rows):
        batch[r, :len(row)] = torch.tensor(row)
    lengths = torch.tensor([len(row) for row in rows])
    x = torch.nn.functional.embedding(batch, state["embed.weight"]).transpose(1, 2)
    pooled = []
    with torch.no_grad():
        for i, width in enumerate(WIDTHS):
            h = torch.relu(torch.nn.functional.conv1d(
                x, state[f"convs.{i}.weight"], state[f"convs.{i}.bias"], padding=width - 1))
            valid = torch.arange(h.shape[2])[None, :] < (lengths[:, None] + width - 1)
            pooled.append(h.masked_fill(~valid[:, None, :], 0).max(2).values)
        out = torch.nn.functional.linear(torch.cat(pooled, 1), state["head.weight"],
                                         state["head.bias"])
    result: np.ndarray = out.numpy()
    return result
