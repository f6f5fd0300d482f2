"""Multi-vector (late-interaction) output: one normalised vector per token, as ColBERT scores them.

bge-m3 (`colbert_linear.pt`, FlagEmbedding's formula): `colbert_linear(hidden)` for every
token after the first (the CLS token is the dense vector's), up to the text's last real
token, each L2-normalised.

PyLate's ColBERT (catalog/colbert.py): the hidden states through each `Dense` module in
turn (`activation(x @ weight.T + bias)`), then each kept token's vector L2-normalised.
Which tokens are kept (all of a query's, expansion included; a document's without its
skiplist tokens; never padding) is decided at tokenization (engine/colbert.py).
"""

from __future__ import annotations

import numpy as np

from keepwarm.runtimes.pooling import l2_normalize

# a Dense module's activation (catalog/colbert.py ACTIVATIONS), elementwise
_ACTIVATIONS = {"identity": lambda x: x, "tanh": np.tanh}
Projection = tuple[np.ndarray, np.ndarray | None, str]  # (weight, bias, activation) of one Dense module


def bge_m3(
    hidden: np.ndarray, attention_mask: np.ndarray, weight: np.ndarray, bias: np.ndarray | None
) -> list[np.ndarray]:
    """Each input's token vectors [tokens - 1, dim] from hidden states [batch, tokens, hidden]."""
    projected = hidden[:, 1:] @ weight.T
    if bias is not None:
        projected = projected + bias
    lengths = attention_mask.sum(axis=1) - 1
    return [
        l2_normalize(projected[row, : lengths[row]]).astype(np.float32, copy=False)
        for row in range(len(hidden))
    ]


def pylate(hidden: np.ndarray, keep: np.ndarray, projections: list[Projection]) -> list[np.ndarray]:
    """Each input's kept token vectors [kept, dim] from hidden states [batch, tokens, hidden]."""
    projected = hidden
    for weight, bias, activation in projections:
        projected = projected @ weight.T
        if bias is not None:
            projected = projected + bias
        projected = _ACTIVATIONS[activation](projected)
    return [
        l2_normalize(projected[row][keep[row]]).astype(np.float32, copy=False) for row in range(len(hidden))
    ]
