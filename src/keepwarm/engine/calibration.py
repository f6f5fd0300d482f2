"""Calibration vectors: what int8/uint8 outputs take their per-dimension ranges from, once per model version.

The first request for a calibrated dtype embeds a fixed corpus (runtimes/probe.py's
calibration texts, truncated to the model's limit) through the model's own queue and
records the vectors in the artifact store under the model version. Every later request,
restart and replica sharing the data directory reads the same file, so the same value
always lands in the same bucket. Ranges for a smaller `dimensions` come from the same
vectors, cut and renormalised as the pipeline cuts served vectors.

Once a version's vectors exist, what each compressed dtype loses in search against the
float vectors is measured (evaluation/builds.py, on the fixed build sample) and kept as
an artifact of its own beside them, so restarts and replicas read it instead of
measuring again, and the vectors of a version calibrated before that record existed
stay exactly as its indexes were built with. That measurement embeds a few hundred
texts, so it runs on a thread of its own: the request that built the ranges is answered
without waiting for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.catalog import ArtifactStore
from keepwarm.catalog.versions import short_version
from keepwarm.outputs.compress import ranges_of
from keepwarm.runtimes.pooling import l2_normalize
from keepwarm.runtimes.probe import calibration_texts

log = logging.getLogger(__name__)

CALIBRATION_FORMAT = "calibration-v1"
RETRIEVAL_FORMAT = "compressed-retrieval-v1"
_FILE = "calibration.npy"
_RECHECK_SECONDS = 10.0  # how long "not built yet" is believed before the store is asked again

# embeds texts with one model version under a prompt name (or none): float32 vectors [n, dim]
EmbedTexts = Callable[[list[str], str | None], np.ndarray]


class Calibrations:
    """Each model version's calibration vectors, built on first use and kept in the artifact store."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._vectors: dict[str, np.ndarray] = {}
        self._retrieval: dict[str, dict[str, Any]] = {}
        self._missing: dict[str, float] = {}  # version -> when the store last had no record

    def ranges(self, name: str, version: str, embed: EmbedTexts, dimensions: int | None) -> np.ndarray:
        """The (2, dim) [min; max] ranges for `version`'s vectors at `dimensions` (blocking)."""
        vectors = self._load(name, version, embed)
        if dimensions is not None and dimensions != vectors.shape[1]:
            vectors = l2_normalize(vectors[:, :dimensions])
        return ranges_of(vectors)

    def retrieval(self, name: str, version: str) -> dict[str, Any] | None:
        """Each compressed dtype's measured retrieval loss for `version`; None until it is built.

        Read from the artifact store (another replica may have built it), never measured
        here; catalog listings ask often, so a missing record is looked for again only
        every few seconds.
        """
        if version in self._retrieval:
            return self._retrieval[version]
        if time.monotonic() - self._missing.get(version, -_RECHECK_SECONDS) < _RECHECK_SECONDS:
            return None
        found = self._store.get(_key(name, version, RETRIEVAL_FORMAT))
        if found is None:
            self._missing[version] = time.monotonic()
            return None
        self._retrieval[version] = found[1]["retrieval"]
        return self._retrieval[version]

    def _load(self, name: str, version: str, embed: EmbedTexts) -> np.ndarray:
        with self._lock:  # one build per version, however many requests ask at once
            if version not in self._vectors:

                def build(folder: Path) -> dict[str, Any]:
                    texts = calibration_texts()
                    np.save(folder / _FILE, embed(texts, None).astype(np.float32))
                    return {"format": CALIBRATION_FORMAT, "version": version, "texts": len(texts)}

                key = _key(name, version, CALIBRATION_FORMAT)
                folder, _ = self._store.get(key) or self._store.build(key, build)
                self._vectors[version] = np.load(folder / _FILE)
                threading.Thread(
                    target=self._record_retrieval,
                    args=(name, version, embed, ranges_of(self._vectors[version])),
                    name=f"keepwarm-retrieval-{short_version(version)}",
                    daemon=True,
                ).start()
            return self._vectors[version]

    def _record_retrieval(self, name: str, version: str, embed: EmbedTexts, ranges: np.ndarray) -> None:
        """Measure (or read) the record; after a failure it is measured again at the next start."""
        key = _key(name, version, RETRIEVAL_FORMAT)
        try:
            _, meta = self._store.get(key) or self._store.build(
                key, lambda _: {"format": RETRIEVAL_FORMAT, "retrieval": _retrieval_loss(name, embed, ranges)}
            )
        except Exception as exc:  # noqa: BLE001 - e.g. the engine closed mid-measurement; requests are unaffected
            log.warning("the compressed search loss of %s was not measured: %s", key, exc)
            return
        self._retrieval[version] = meta["retrieval"]
        self._missing.pop(version, None)


def _key(name: str, version: str, kind: str) -> str:
    return f"{name}-{short_version(version)}-{kind}"


def _retrieval_loss(name: str, embed: EmbedTexts, ranges: np.ndarray) -> dict[str, Any]:
    """What each compressed dtype loses in search (evaluation sits above the engine: imported on use)."""
    from keepwarm.evaluation.builds import compressed_loss

    return compressed_loss(name, embed, ranges)
