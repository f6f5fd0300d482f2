"""A linear drift adapter: maps vectors of a new model version into the old version's space.

While an index built with the old version is being re-embedded, queries embedded with
the new version can still search it: `adapt(new_vectors)` ≈ what the old version would
have produced. Two fits are offered. Least squares (the default) is a general linear
map; it needs more samples than dimensions and measured far better when the versions
differ by more than a rotation (docs/batches.md). Orthogonal Procrustes (a rotation)
keeps lengths and angles, needs few samples and cannot overfit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.errors import ConfigError
from keepwarm.runtimes.pooling import l2_normalize

FORMAT = "keepwarm-adapter/1"
METHODS = ("procrustes", "lstsq")


@dataclass(frozen=True)
class LinearAdapter:
    """`weight` has shape (new dimensions, old dimensions); outputs are L2-normalised."""

    weight: np.ndarray
    metadata: dict[str, str]

    def adapt(self, new_vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(np.asarray(new_vectors, dtype=np.float32) @ self.weight).astype(np.float32)

    def save(self, path: Path) -> None:
        """A safetensors file: tensor `weight`, and string metadata naming both versions."""
        from safetensors.numpy import save_file

        save_file(
            {"weight": np.ascontiguousarray(self.weight, dtype=np.float32)},
            str(path),
            metadata={"format": FORMAT, **self.metadata},
        )

    @classmethod
    def load(cls, path: Path) -> LinearAdapter:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise ConfigError(f"{path} is not a keepwarm adapter ({FORMAT})")
            return cls(handle.get_tensor("weight"), {k: v for k, v in metadata.items() if k != "format"})


def fit(
    new_vectors: np.ndarray, old_vectors: np.ndarray, method: str, metadata: dict[str, Any]
) -> LinearAdapter:
    """Fit the map new → old on paired vectors of the same texts."""
    new = np.asarray(new_vectors, dtype=np.float64)
    old = np.asarray(old_vectors, dtype=np.float64)
    if method == "procrustes":
        left, _, right = np.linalg.svd(new.T @ old, full_matrices=False)
        weight = left @ right
    elif method == "lstsq":
        weight = np.linalg.lstsq(new, old, rcond=None)[0]
    else:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return LinearAdapter(weight.astype(np.float32), {key: str(value) for key, value in metadata.items()})
