"""Pooling and normalisation, identical to sentence-transformers' `Pooling` and `Normalize`.

Runtimes return per-token hidden states; turning them into one vector per text happens
here, once, in NumPy, so every runtime shares exactly the same arithmetic.
"""

from __future__ import annotations

import numpy as np

from keepwarm.catalog.spec import Pooling


def pool(hidden: np.ndarray, attention_mask: np.ndarray, mode: Pooling) -> np.ndarray:
    """Reduce hidden states [batch, tokens, dim] to vectors [batch, dim]."""
    mask = attention_mask.astype(hidden.dtype, copy=False)
    if mode == "mean":
        summed = np.einsum("btd,bt->bd", hidden, mask)
        counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return summed / counts
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        masked = np.where(mask[:, :, None] > 0, hidden, np.asarray(-1e9, dtype=hidden.dtype))
        return masked.max(axis=1)
    if mode == "lasttoken":
        # position of the last attended token, whether the batch is left- or right-padded
        last = attention_mask.shape[1] - 1 - np.argmax(attention_mask[:, ::-1], axis=1)
        return hidden[np.arange(hidden.shape[0]), last]
    raise ValueError(f"unknown pooling mode {mode!r}")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale each row to unit length (torch.nn.functional.normalize's epsilon)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
