"""Sparse (lexical) vectors: vocabulary ids with weights, from SPLADE or bge-m3's sparse head.

SPLADE (sentence-transformers `SpladePooling` over a masked-LM's logits): each vocabulary
id's weight is the max (or sum) over the text's tokens of `log1p(relu(logit))` (twice
log1p for the `log1p_relu` activation), padding masked out. Nothing is dropped: a vocabulary
id scores from every position's logits.

bge-m3 (`sparse_linear.pt`, FlagEmbedding's formula): each token's weight is
`relu(w · hidden + b)`; an id's weight is the max over its occurrences; special tokens
(CLS, EOS, padding, unknown) and zero weights are dropped.

Either way the answer is the id-sorted non-zero entries, optionally pruned to the `top_k`
heaviest (then re-sorted by id).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SparseVector:
    """Non-zero entries of one sparse vector: vocabulary ids in ascending order and their weights."""

    indices: np.ndarray  # int64
    values: np.ndarray  # float32

    def top(self, k: int | None) -> SparseVector:
        """The `k` heaviest entries (all when `k` is None or covers them), still sorted by id."""
        if k is None or k >= len(self.indices):
            return self
        keep = np.sort(np.argsort(-self.values, kind="stable")[:k])
        return SparseVector(self.indices[keep], self.values[keep])


def from_dense(row: np.ndarray) -> SparseVector:
    """The non-zero entries of a vocabulary-sized row."""
    (indices,) = np.nonzero(row)
    return SparseVector(indices.astype(np.int64), row[indices].astype(np.float32))


def splade(logits: np.ndarray, attention_mask: np.ndarray, *, strategy: str, activation: str) -> np.ndarray:
    """SPLADE rows [batch, vocab] from masked-LM logits [batch, tokens, vocab] (see the module docs)."""
    mask = attention_mask.astype(logits.dtype)[:, :, None]
    weights = np.log1p(np.maximum(logits * mask, 0))
    if activation == "log1p_relu":
        weights = np.log1p(weights)
    pooled = weights.max(axis=1) if strategy == "max" else weights.sum(axis=1)
    return pooled.astype(np.float32, copy=False)


def bge_m3(
    hidden: np.ndarray,
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    special_ids: np.ndarray,
) -> list[SparseVector]:
    """bge-m3's lexical weights from hidden states [batch, tokens, dim] (see the module docs)."""
    token_weights = np.maximum(hidden @ weight.T + bias, 0)[:, :, 0]  # [batch, tokens]
    keep = (attention_mask > 0) & ~np.isin(input_ids, special_ids) & (token_weights > 0)
    vectors = []
    for row in range(len(input_ids)):
        ids, values = input_ids[row][keep[row]], token_weights[row][keep[row]]
        unique, inverse = np.unique(ids, return_inverse=True)
        best = np.zeros(len(unique), dtype=np.float32)
        np.maximum.at(best, inverse, values.astype(np.float32))
        vectors.append(SparseVector(unique.astype(np.int64), best))
    return vectors
