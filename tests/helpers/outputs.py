"""Reading what a server recorded for a model version's compressed outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keepwarm.outputs.compress import ranges_of


def calibration_ranges(data_dir: Path, model: str) -> np.ndarray:
    """The int8/uint8 ranges of `model`'s calibration vectors, as recorded in the server's artifact store."""
    (path,) = (data_dir / "artifacts").glob(f"{model}-*-calibration-*/calibration.npy")
    return ranges_of(np.load(path))
