"""How close one runtime's vectors are to another's, and how fast it is, on the same token batches."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.pooling import l2_normalize

Batch = tuple[np.ndarray, np.ndarray]  # input_ids, attention_mask

# Min cosine to fp32 at which vectors are interchangeable: a runtime may stand in for fp32,
# and two model versions may share one index.
FP32_EQUIVALENT = 0.9999


def embed_all(runtime: Runtime, batches: Iterable[Batch]) -> np.ndarray:
    """Vectors for every row of every batch, stacked."""
    return np.concatenate([runtime.embed(ids, mask) for ids, mask in batches])


def row_cosines(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """The cosine between each row of `expected` and the same row of `actual`."""
    a = l2_normalize(expected.astype(np.float64))
    b = l2_normalize(actual.astype(np.float64))
    return (a * b).sum(axis=1)


def cosine_stats(expected: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Mean and minimum row-wise cosine between two stacks of vectors."""
    cosines = row_cosines(expected, actual)
    return {"mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min())}


def texts_per_second(runtime: Runtime, batches: list[Batch]) -> float:
    """Best of three passes over the batches, after one warm-up pass (first calls compile kernels)."""
    embed_all(runtime, batches)
    rows = sum(len(ids) for ids, _ in batches)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        embed_all(runtime, batches)
        best = min(best, time.perf_counter() - started)
    return rows / best
