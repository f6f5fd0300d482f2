"""A deterministically perturbed copy of a model: a stand-in "new version" for trying upgrades.

Real upgrades (a fine-tune, a re-quantisation) move every vector a little. Adding
seeded Gaussian noise, scaled to each weight matrix's own spread, does the same in a
reproducible way, so the drift adapter and the upgrade walkthrough can be shown and
measured without downloading a second model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from keepwarm.errors import ConfigError

WEIGHTS = "model.safetensors"


def perturbed_copy(source: Path, target: Path, *, scale: float, seed: int = 0) -> Path:
    """Copy the model in `source` to `target`, adding noise of `scale` × each matrix's std."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    if not (source / WEIGHTS).is_file():
        raise ConfigError(f"{source} has no {WEIGHTS} to perturb")
    if target.exists():
        raise ConfigError(f"{target} already exists")
    shutil.copytree(source, target)
    rng = np.random.default_rng(seed)
    with safe_open(str(source / WEIGHTS), framework="numpy") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in sorted(handle.keys())}
    for name, tensor in tensors.items():
        if tensor.ndim >= 2 and np.issubdtype(tensor.dtype, np.floating):
            noise = rng.standard_normal(tensor.shape).astype(tensor.dtype)
            tensors[name] = tensor + scale * float(tensor.std()) * noise
    save_file(tensors, str(target / WEIGHTS), metadata=metadata)
    return target
