"""Multi-vector (late-interaction) output: one normalised vector per token, as ColBERT scores them.

bge-m3 (`colbert_linear.pt`, FlagEmbedding's formula): `colbert_linear(hidden)` for every
token after the first (the CLS token is the dense vector's), up to the text's last real
token, each L2-normalised.
"""

from __future__ import annotations

import numpy as np

from keepwarm.runtimes.pooling import l2_normalize


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
