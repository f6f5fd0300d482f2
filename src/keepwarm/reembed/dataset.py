"""The output of `keepwarm reembed`: a folder of vector parts and a manifest.

    out/
      _keepwarm.json          model, exact version, dimensions, format, sources and rows done, cost
      part-000000.parquet     columns `id` (string) and `vector` (fixed-size list of float32)
      ...                     or, with format "numpy": part-000000.npy + part-000000.ids.jsonl

Each checkpoint writes one complete part (temporary name, flushed, renamed) and then
replaces the manifest the same way; the manifest is the commit point. A part the
manifest does not list was never committed and is deleted when the folder is next
opened. Parquet readers (pyarrow, pandas, DuckDB, Polars) read the folder as one
dataset: they skip files starting with `_`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from keepwarm.batches.files import fsync_directory
from keepwarm.errors import ConfigError

MANIFEST = "_keepwarm.json"
OUTPUT_FORMATS = ("parquet", "numpy")


def write_atomically(path: Path, write) -> None:  # noqa: ANN001 - write(temporary_path)
    """Write `path` whole or not at all: to a temporary name, flushed, then renamed."""
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


def _save_npy(path: Path, vectors: np.ndarray) -> None:
    with path.open("wb") as handle:  # a handle, so NumPy does not append ".npy" to the temporary name
        np.save(handle, vectors)


@dataclass(frozen=True)
class SourceState:
    """How far one corpus file got, and the size and time that identify its contents."""

    rows_done: int
    size: int
    mtime_ns: int
    complete: bool = False


class VectorDataset:
    """An output folder bound to one model version; refuses vectors of any other."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest

    @classmethod
    def open(
        cls, folder: Path, *, model: str, version: str, dimensions: int, output_format: str
    ) -> VectorDataset:
        """Open (or start) `folder` for vectors of `model` at `version`."""
        manifest_path = folder / MANIFEST
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest["version"] != version:
                raise ConfigError(
                    f"{folder} holds vectors of {manifest['model']} version {manifest['version'][:12]}; "
                    f"refusing to add vectors of {model} version {version[:12]}. Write to a new output."
                )
            if manifest["format"] != output_format:
                raise ConfigError(f"{folder} is in {manifest['format']} format, not {output_format}")
        elif folder.exists() and any(folder.iterdir()):
            raise ConfigError(f"{folder} exists and is not a keepwarm output folder")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            manifest = {
                "model": model,
                "version": version,
                "dimensions": dimensions,
                "format": output_format,
                "rows": 0,
                "parts": [],
                "sources": {},
                "tokens": 0,
                "seconds": 0.0,
            }
        dataset = cls(folder, manifest)
        dataset._remove_uncommitted()
        return dataset

    def source(self, path: Path) -> SourceState | None:
        state = self.manifest["sources"].get(str(path.resolve()))
        return SourceState(**state) if state else None

    def append(
        self,
        ids: list[str],
        vectors: np.ndarray,
        *,
        source: SourceState,
        source_path: Path,
        tokens: int,
        seconds: float,
    ) -> None:
        """Write one part and commit it with the source's new progress."""
        name = f"part-{len(self.manifest['parts']):06d}"
        files = self._write_part(name, ids, np.ascontiguousarray(vectors, dtype=np.float32))
        manifest = {
            **self.manifest,
            "rows": self.manifest["rows"] + len(ids),
            "parts": [*self.manifest["parts"], {"files": files, "rows": len(ids)}],
            "sources": {**self.manifest["sources"], str(source_path.resolve()): source.__dict__},
            "tokens": self.manifest["tokens"] + tokens,
            "seconds": self.manifest["seconds"] + seconds,
        }
        self._commit(manifest)

    def mark_complete(self, source_path: Path, source: SourceState) -> None:
        key = str(source_path.resolve())
        self._commit({**self.manifest, "sources": {**self.manifest["sources"], key: source.__dict__}})

    def _commit(self, manifest: dict[str, Any]) -> None:
        write_atomically(self.folder / MANIFEST, lambda path: path.write_text(json.dumps(manifest, indent=1)))
        self.manifest = manifest

    def _write_part(self, name: str, ids: list[str], vectors: np.ndarray) -> list[str]:
        if self.manifest["format"] == "parquet":
            import pyarrow.parquet as pq

            table = vector_table(ids, vectors, self.manifest["model"], self.manifest["version"])
            write_atomically(self.folder / f"{name}.parquet", lambda path: pq.write_table(table, path))
            return [f"{name}.parquet"]
        write_atomically(self.folder / f"{name}.npy", lambda path: _save_npy(path, vectors))
        lines = b"".join(orjson.dumps({"id": identifier}) + b"\n" for identifier in ids)
        write_atomically(self.folder / f"{name}.ids.jsonl", lambda path: path.write_bytes(lines))
        return [f"{name}.npy", f"{name}.ids.jsonl"]

    def _remove_uncommitted(self) -> None:
        committed = {name for part in self.manifest["parts"] for name in part["files"]}
        for path in self.folder.iterdir():
            if path.name != MANIFEST and path.name not in committed:
                path.unlink()


def vector_table(ids: list[str], vectors: np.ndarray, model: str, version: str):  # noqa: ANN201 - pa.Table
    """A part's Arrow table: `id` and `vector` columns, the model and exact version in its metadata."""
    import pyarrow as pa

    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    table = pa.table({"id": pa.array(ids, pa.string()), "vector": column})
    return table.replace_schema_metadata({"keepwarm.model": model, "keepwarm.version": version})


def read_vectors(folder: Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """All committed ids and vectors of an output folder, in order, with its manifest."""
    manifest = json.loads((folder / MANIFEST).read_text())
    ids: list[str] = []
    blocks = [np.empty((0, manifest["dimensions"]), dtype=np.float32)]
    for part in manifest["parts"]:
        if manifest["format"] == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(folder / part["files"][0])
            ids += table.column("id").to_pylist()
            blocks.append(
                table.column("vector").combine_chunks().flatten().to_numpy().reshape(len(table), -1)
            )
        else:
            blocks.append(np.load(folder / part["files"][0]))
            ids += [
                orjson.loads(line)["id"] for line in (folder / part["files"][1]).read_bytes().splitlines()
            ]
    return ids, np.concatenate(blocks), manifest
