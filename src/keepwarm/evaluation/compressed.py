"""How much retrieval a compressed dtype keeps: recall@k of its top-k against float32's top-k.

Each dtype is searched the way a vector database searches it: int8/uint8 by the integer
dot product of the quantized values, binary/ubinary by Hamming distance of the packed
bits (smaller is closer), float by the dot product. Recall@k is the share of float's
k nearest documents that the compressed search also returns in its k nearest, averaged
over the queries.
"""

from __future__ import annotations

import numpy as np

from keepwarm.outputs.compress import quantize


def _scores(queries: np.ndarray, documents: np.ndarray, dtype: str) -> np.ndarray:
    if dtype in ("binary", "ubinary"):
        q = np.unpackbits(queries.view(np.uint8), axis=1).astype(np.int32)
        d = np.unpackbits(documents.view(np.uint8), axis=1).astype(np.int32)
        agreement = q @ d.T + (1 - q) @ (1 - d).T  # bits - Hamming distance
        return agreement.astype(np.float64)
    return queries.astype(np.float64) @ documents.astype(np.float64).T


def top_k(queries: np.ndarray, documents: np.ndarray, dtype: str, k: int) -> np.ndarray:
    """Indices of each query's `k` best documents under `dtype`'s similarity, best first."""
    scores = _scores(queries, documents, dtype)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall_vs_float(
    queries: np.ndarray, documents: np.ndarray, ranges: np.ndarray, dtypes: list[str], k: int = 10
) -> dict[str, float]:
    """Recall@k of each dtype's search against the float search (see the module docs)."""
    reference = top_k(queries, documents, "float", k)
    results = {}
    for dtype in dtypes:
        found = top_k(quantize(queries, dtype, ranges), quantize(documents, dtype, ranges), dtype, k)
        hits = [len(set(a) & set(b)) for a, b in zip(reference, found, strict=True)]
        results[dtype] = float(np.mean(hits)) / k
    return results
