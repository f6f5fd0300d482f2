"""How close one runtime's outputs are to another's, and how fast it is, on the same token batches.

Embedding vectors are compared by cosine. Score heads (cross-encoders, decoder rerankers)
are compared by what a ranking depends on: the rank correlation of their scores and the
largest difference of a logit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from keepwarm.catalog.spec import ModelSpec
from keepwarm.runtimes.base import Runtime
from keepwarm.runtimes.pooling import l2_normalize

Batch = tuple[np.ndarray, ...]  # input_ids, attention_mask[, token_type_ids]

# Min cosine to fp32 at which vectors are interchangeable: a runtime may stand in for fp32,
# and two model versions may share one index.
FP32_EQUIVALENT = 0.9999
# Score heads: the largest logit difference at which a runtime may stand in for fp32.
FP32_EQUIVALENT_LOGITS = 1e-4


def embed_all(runtime: Runtime, batches: Iterable[Batch]) -> np.ndarray:
    """Vectors for every row of every batch, stacked."""
    return np.concatenate([runtime.embed(*batch) for batch in batches])


def row_cosines(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """The cosine between each row of `expected` and the same row of `actual`."""
    a = l2_normalize(expected.astype(np.float64))
    b = l2_normalize(actual.astype(np.float64))
    return (a * b).sum(axis=1)


def cosine_stats(expected: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Mean and minimum row-wise cosine between two stacks of vectors."""
    cosines = row_cosines(expected, actual)
    return {"mean_cosine": float(cosines.mean()), "min_cosine": float(cosines.min())}


def _ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)


def score_stats(expected: np.ndarray, actual: np.ndarray, causal: bool = False) -> dict[str, float]:
    """Spearman rank correlation of each row's score, and the largest logit difference.

    A row's score is its first logit, or for a yes/no decoder (`causal`) logit(yes) - logit(no).
    """
    score_a = expected[:, 0] - expected[:, 1] if causal else expected[:, 0]
    score_b = actual[:, 0] - actual[:, 1] if causal else actual[:, 0]
    a, b = _ranks(score_a), _ranks(score_b)
    a, b = a - a.mean(), b - b.mean()
    spread = float(np.sqrt((a * a).sum() * (b * b).sum()))
    rank_correlation = float((a * b).sum() / spread) if spread else 1.0
    difference = float(np.abs(expected.astype(np.float64) - actual).max())
    return {"rank_correlation": rank_correlation, "max_score_difference": difference}


def agreement(spec: ModelSpec, expected: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """How well `actual` rows stand in for `expected` ones: cosine for vectors, rank and logits for scores."""
    if spec.head == "base":
        return cosine_stats(expected, actual)
    return score_stats(expected, actual, causal=spec.head == "causal-lm")


def fp32_equivalent(accuracy: dict[str, float]) -> bool:
    """Whether measured agreement is close enough for a runtime to stand in for fp32."""
    if "max_score_difference" in accuracy:
        return accuracy["max_score_difference"] <= FP32_EQUIVALENT_LOGITS
    return accuracy.get("min_cosine", 1.0) >= FP32_EQUIVALENT


def texts_per_second(runtime: Runtime, batches: list[Batch]) -> float:
    """Best of two passes over the batches, after one warm-up pass (first calls compile kernels).

    Over the calibration texts' calls (factory.py's `_Base.typical`), a pass lasts about a
    second: long enough that a moment of the machine's noise does not decide between two
    runtimes, as it did on the short probe texts (docs/benchmarks.md).
    """
    embed_all(runtime, batches)
    rows = sum(len(batch[0]) for batch in batches)
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        embed_all(runtime, batches)
        best = min(best, time.perf_counter() - started)
    return rows / best


def workload(batches: list[Batch]) -> dict[str, float]:
    """What a speed was measured on: texts, and their real tokens on average (recorded beside it)."""
    rows = sum(len(batch[0]) for batch in batches)
    tokens = sum(int(batch[1].sum()) for batch in batches)
    return {"texts": rows, "tokens_per_text": round(tokens / rows, 1)}
