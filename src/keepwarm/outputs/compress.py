"""Compressed vectors: int8/uint8 scalar quantization and packed binary, as sentence-transformers does them.

int8 and uint8 map each dimension's calibrated range [min, max] onto 256 buckets
(`floor((x - min) / step)`, clipped), exactly like sentence-transformers
`quantize_embeddings(..., ranges=...)`; the ranges come from a model version's
calibration vectors (engine/calibration.py), so every replica and every restart maps a
value to the same bucket. binary and ubinary pack the sign bits (x > 0) eight per byte,
most significant first; binary is that byte offset by -128 into int8, as Cohere sends it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

OutputDtype = Literal["float", "int8", "uint8", "binary", "ubinary"]
OUTPUT_DTYPES: tuple[str, ...] = ("float", "int8", "uint8", "binary", "ubinary")
CALIBRATED: frozenset[str] = frozenset({"int8", "uint8"})
COMPRESSED_DTYPES: tuple[str, ...] = tuple(dtype for dtype in OUTPUT_DTYPES if dtype != "float")


def ranges_of(calibration: np.ndarray) -> np.ndarray:
    """Per-dimension [min; max] of calibration vectors: the (2, dim) array quantization uses."""
    return np.vstack((calibration.min(axis=0), calibration.max(axis=0))).astype(np.float32)


def quantize(vectors: np.ndarray, dtype: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """`vectors` [n, dim] in `dtype`; int8/uint8 need `ranges` (see the module docs)."""
    if dtype == "float":
        return vectors.astype(np.float32, copy=False)
    if dtype in CALIBRATED:
        if ranges is None:
            raise ValueError(f"{dtype} needs calibrated ranges")
        starts = ranges[0]
        steps = (ranges[1] - starts) / 255
        steps = np.where(steps == 0, 1, steps)
        buckets = np.clip(np.floor((vectors - starts) / steps), 0, 255)
        return buckets.astype(np.uint8) if dtype == "uint8" else (buckets - 128).astype(np.int8)
    packed = np.packbits(vectors > 0, axis=-1)
    if dtype == "ubinary":
        return packed
    if dtype == "binary":
        return (packed.astype(np.int16) - 128).astype(np.int8)
    raise ValueError(f"unknown output dtype {dtype!r}")
