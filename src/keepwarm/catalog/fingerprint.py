"""Content fingerprints of model directories.

Artifacts (exported ONNX graphs) are cached under a hash of the files they were built
from, so a changed model never reuses a stale artifact. Hashing gigabytes of weights on
every start would ruin cold starts, so each file's digest is remembered against its
size and modification time in a small JSON file in the data directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_CHUNK = 1 << 20
_IGNORED_NAMES = {".gitattributes", "README.md"}


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class DigestCache:
    """Remembers file digests by (path, size, mtime) so unchanged files are not re-read."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            self._entries: dict[str, str] = json.loads(path.read_text())
        except (OSError, ValueError):
            self._entries = {}

    def digest(self, file: Path) -> str:
        stat = file.stat()
        key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in self._entries:
            self._entries[key] = _file_digest(file)
            self._save()
        return self._entries[key]

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self._entries))
        temporary.replace(self._path)


def directory_fingerprint(directory: Path, cache: DigestCache) -> str:
    """SHA-256 over every file's relative path and content digest, in a stable order."""
    combined = hashlib.sha256()
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = file.relative_to(directory)
        if file.name in _IGNORED_NAMES or any(part.startswith(".") for part in relative.parts):
            continue
        combined.update(f"{relative.as_posix()}\0{cache.digest(file)}\n".encode())
    return combined.hexdigest()
