"""Calibration vectors: what int8/uint8 outputs take their per-dimension ranges from, once per model version.

The first request for a calibrated dtype embeds a fixed corpus (runtimes/probe.py's
calibration texts, truncated to the model's limit) through the model's own queue and
records the vectors in the artifact store under the model version. Every later request,
restart and replica sharing the data directory reads the same file, so the same value
always lands in the same bucket. Ranges for a smaller `dimensions` come from the same
vectors, cut and renormalised as the pipeline cuts served vectors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.catalog import ArtifactStore
from keepwarm.catalog.versions import short_version
from keepwarm.outputs.compress import ranges_of
from keepwarm.runtimes.pooling import l2_normalize
from keepwarm.runtimes.probe import calibration_texts

CALIBRATION_FORMAT = "calibration-v1"
_FILE = "calibration.npy"

# embeds texts with one model version: (texts) -> float32 vectors [n, dim]
EmbedTexts = Callable[[list[str]], np.ndarray]


class Calibrations:
    """Each model version's calibration vectors, built on first use and kept in the artifact store."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._vectors: dict[str, np.ndarray] = {}

    def ranges(self, name: str, version: str, embed: EmbedTexts, dimensions: int | None) -> np.ndarray:
        """The (2, dim) [min; max] ranges for `version`'s vectors at `dimensions` (blocking)."""
        vectors = self._load(name, version, embed)
        if dimensions is not None and dimensions != vectors.shape[1]:
            vectors = l2_normalize(vectors[:, :dimensions])
        return ranges_of(vectors)

    def _load(self, name: str, version: str, embed: EmbedTexts) -> np.ndarray:
        with self._lock:  # one build per version, however many requests ask at once
            if version not in self._vectors:
                key = f"{name}-{short_version(version)}-{CALIBRATION_FORMAT}"

                def build(folder: Path) -> dict[str, Any]:
                    texts = calibration_texts()
                    np.save(folder / _FILE, embed(texts).astype(np.float32))
                    return {"format": CALIBRATION_FORMAT, "version": version, "texts": len(texts)}

                folder, _ = self._store.get(key) or self._store.build(key, build)
                self._vectors[version] = np.load(folder / _FILE)
            return self._vectors[version]
