"""The on-disk cache of built runtime artifacts (exported ONNX graphs).

Each artifact lives in its own folder named by a key that covers everything it was
built from. A folder is only ever created complete: builds happen in a temporary
folder that is renamed into place, so a crash mid-export never leaves a half artifact.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_META = "artifact.json"


class ArtifactStore:
    """Folders of built artifacts under `<data dir>/artifacts/`."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "artifacts"

    def get(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """Return the artifact folder and its metadata, or None if it was never built."""
        folder = self.root / key
        try:
            return folder, json.loads((folder / _META).read_text())
        except (OSError, ValueError):
            return None

    def build(self, key: str, builder: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
        """Run `builder` in a fresh folder, then publish that folder atomically under `key`.

        `builder` writes its files into the folder and returns metadata to store with them.
        """
        log.info("building artifact %s (later starts reuse it)", key)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.root))
        try:
            metadata = builder(staging)
            (staging / _META).write_text(json.dumps(metadata, indent=2))
            target = self.root / key
            try:
                os.rename(staging, target)
            except OSError:
                # another process published the same key first; theirs is equally valid
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        found = self.get(key)
        assert found is not None, f"artifact {key} vanished after it was built"
        return found
