"""Comparing vectors with the reference library's."""

from __future__ import annotations

import numpy as np


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_same_vectors(actual: np.ndarray, expected: np.ndarray, minimum: float = 0.9999) -> None:
    assert np.asarray(actual).shape == np.asarray(expected).shape
    worst = float(cosines(actual, expected).min())
    assert worst >= minimum, f"min cosine {worst} < {minimum}"
