"""How a compressed dtype is searched, and how much retrieval it keeps against float32.

Each dtype is searched the way a vector database searches it: int8/uint8 by the integer
dot product of the quantized values, binary/ubinary by Hamming distance of the packed
bits (smaller is closer), float by the dot product. `searchable` turns compressed
vectors into float64 rows whose plain dot product ranks documents exactly that way, so
the one exact search (search.py) serves every dtype. Recall@k is the share of float's
k nearest documents that the compressed search also returns in its k nearest, averaged
over the queries.
"""

from __future__ import annotations

import numpy as np

from keepwarm.outputs.compress import quantize

BITS = frozenset({"binary", "ubinary"})


def searchable(vectors: np.ndarray, dtype: str) -> np.ndarray:
    """float64 rows whose dot products order documents as `dtype`'s search does.

    int8/uint8: the integer values (float64 holds their dot products exactly).
    binary/ubinary: each bit as ±1, whose dot product is bits − 2 × Hamming distance,
    so the closer document scores higher. The values may come in any numeric dtype (a
    server's JSON arrives as floats); each is taken as its byte, mod 256.
    """
    if dtype in BITS:
        bits = np.unpackbits((np.asarray(vectors).astype(np.int16) % 256).astype(np.uint8), axis=1)
        return bits.astype(np.float64) * 2 - 1
    return np.asarray(vectors, dtype=np.float64)


def searchable_width(dtype: str, dimensions: int) -> int:
    """How many values `searchable` gives each vector of `dimensions` dimensions."""
    return -(-dimensions // 8) * 8 if dtype in BITS else dimensions


def top_k(queries: np.ndarray, documents: np.ndarray, dtype: str, k: int) -> np.ndarray:
    """Indices of each query's `k` best documents under `dtype`'s similarity, best first."""
    scores = searchable(queries, dtype) @ searchable(documents, dtype).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def overlap(reference: np.ndarray, found: np.ndarray) -> float:
    """The mean share of each row of `reference` (top-k indices) that the same row of `found` holds."""
    if not len(reference):
        return 0.0
    hits = [len(set(a) & set(b)) / len(a) for a, b in zip(reference, found, strict=True)]
    return float(np.mean(hits))


def recall_vs_float(
    queries: np.ndarray, documents: np.ndarray, ranges: np.ndarray, dtypes: list[str], k: int = 10
) -> dict[str, float]:
    """Recall@k of each dtype's search against the float search (see the module docs)."""
    reference = top_k(queries, documents, "float", k)
    return {
        dtype: overlap(
            reference, top_k(quantize(queries, dtype, ranges), quantize(documents, dtype, ranges), dtype, k)
        )
        for dtype in dtypes
    }
