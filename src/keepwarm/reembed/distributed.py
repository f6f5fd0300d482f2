"""`keepwarm reembed --ray`: a corpus re-embedded by a pool of engine actors on Ray Data.

The corpus (one JSONL, CSV or Parquet file, or a folder of them) is cut into shards of
`shard_rows` rows, planned here from the files' row counts. Ray Data runs three stages
over the shards, streaming, each shard one row of the dataset so it stays whole:

    read (tasks)  ->  embed (a pool of actors, each an in-process Engine pinned to one version)
                  ->  write (tasks: one Parquet part per shard, written atomically)

A part on disk is a finished shard. After a crash, a new run with the same command
plans the same shards and sends only those whose part is missing; the manifest
(`_keepwarm.json`, as the in-process reembed writes it) lists every part once all are
written, so `read_vectors` and Parquet readers see the same dataset either way. The
output folder must be storage every node writes to (a shared file system).

Serial parts, done once here: planning (a line count for JSONL and CSV, the footer for
Parquet) and the manifest. Everything per row runs on the cluster.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from keepwarm.catalog import ModelSpec
from keepwarm.engine import Engine
from keepwarm.errors import ConfigError
from keepwarm.reembed.dataset import MANIFEST, vector_table, write_atomically
from keepwarm.reembed.embedders import LocalEmbedder
from keepwarm.reembed.reader import FORMATS, Corpus
from keepwarm.reembed.run import RunReport

_LIGHT_TASK_CPUS = 0.25  # reading and writing a shard: I/O, so the engine actors keep the CPUs


@dataclass(frozen=True)
class Shard:
    """Rows `start` to `stop` of one corpus file: the unit of work and of resumption."""

    number: int
    path: str
    start: int
    stop: int

    @property
    def part(self) -> str:
        return f"part-{self.number:06d}.parquet"


@dataclass(frozen=True)
class Job:
    """What every actor needs to embed a shard exactly as the in-process reembed would."""

    specs: list[ModelSpec]
    data_dir: Path
    model: str  # `name@full-version`: the actors refuse to embed with anything else
    version: str
    truncate: bool
    id_column: str
    text_column: str


def corpus_files(path: Path) -> list[Path]:
    """The corpus: `path` itself, or every JSONL, CSV and Parquet file in the folder `path`, sorted."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in FORMATS and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"{path} holds no corpus files ({', '.join(FORMATS)})")
    return files


def plan_shards(files: list[Path], id_column: str, text_column: str, shard_rows: int) -> list[Shard]:
    shards: list[Shard] = []
    for path in files:
        rows = Corpus(path, id_column, text_column).count()
        for start in range(0, rows, shard_rows):
            shards.append(Shard(len(shards), str(path.resolve()), start, min(start + shard_rows, rows)))
    return shards


def _sources(files: list[Path]) -> dict[str, dict[str, int]]:
    return {str(p.resolve()): {"size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files}


def _open_output(folder: Path, model: str, version: str, sources: dict, shard_rows: int) -> dict[str, Any]:
    """The manifest of `folder`, started or resumed; refuses another version, corpus or shard size."""
    path = folder / MANIFEST
    if not path.exists():
        if folder.exists() and any(folder.iterdir()):
            raise ConfigError(f"{folder} exists and is not a keepwarm output folder")
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {"model": model, "version": version, "format": "parquet", "sources": sources}
        manifest |= {"shard_rows": shard_rows, "rows": 0, "parts": [], "tokens": 0, "seconds": 0.0}
        write_atomically(path, lambda p: p.write_text(json.dumps(manifest, indent=1)))
        return manifest
    manifest = json.loads(path.read_text())
    if manifest["version"] != version:
        raise ConfigError(
            f"{folder} holds vectors of {manifest['model']} version {manifest['version'][:12]}; "
            f"refusing to add vectors of version {version[:12]}. Write to a new output."
        )
    if manifest.get("sources") != sources or manifest.get("shard_rows") != shard_rows:
        raise ConfigError(
            f"the corpus or --checkpoint-rows changed since {folder} was started; write to a new output"
        )
    for leftover in folder.glob(".*.tmp"):  # a part being written when the last run stopped
        leftover.unlink()
    return manifest


def _read_rows(corpus: Corpus, start: int, stop: int) -> list[tuple[str, str]]:
    return next(corpus.chunks(stop - start, skip=start), [])


def _read_shard(row: dict[str, Any], id_column: str, text_column: str) -> dict[str, Any]:
    """Ray Data's read stage: a shard's ids and texts."""
    rows = _read_rows(Corpus(Path(row["path"]), id_column, text_column), row["start"], row["stop"])
    return {**row, "ids": [i for i, _ in rows], "texts": [t for _, t in rows]}


class _ShardEmbedder:
    """Ray Data's embed stage: one actor, one engine, loaded once, serving the pinned version only."""

    def __init__(self, job: Job) -> None:
        self._engine = Engine(job.specs, job.data_dir)
        self._embedder = LocalEmbedder(self._engine, job.model, truncate=job.truncate)
        if self._embedder.version != job.version:  # this node's model files are not the planned version
            raise ConfigError(
                f"this node serves version {self._embedder.version[:12]}, not {job.version[:12]}"
            )

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        vectors, tokens = self._embedder.embed(list(row.pop("texts")))
        return {**row, "vectors": vectors, "tokens": tokens}


def _write_shard(row: dict[str, Any], folder: str, model: str, version: str) -> dict[str, Any]:
    """Ray Data's write stage: the shard's Parquet part, whole or not at all."""
    table = vector_table(list(row["ids"]), np.asarray(row["vectors"], dtype=np.float32), model, version)
    write_atomically(Path(folder) / Shard(**_shard_fields(row)).part, lambda p: pq.write_table(table, p))
    return {"number": row["number"], "rows": len(row["ids"]), "tokens": int(row["tokens"])}


def _shard_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in ("number", "path", "start", "stop")}


def reembed_on_ray(
    corpus_path: Path,
    folder: Path,
    job: Job,
    *,
    shard_rows: int,
    actors: int,
    actor_cpus: float,
) -> tuple[RunReport, int]:
    """Embed every shard of the corpus not yet in `folder`; returns the report and the shards done."""
    import ray

    files = corpus_files(corpus_path)
    name = job.model.partition("@")[0]
    manifest = _open_output(folder, name, job.version, _sources(files), shard_rows)
    shards = plan_shards(files, job.id_column, job.text_column, shard_rows)
    pending = [shard for shard in shards if not (folder / shard.part).exists()]
    report = RunReport(skipped=sum(s.stop - s.start for s in shards) - sum(s.stop - s.start for s in pending))
    started = time.monotonic()
    if pending:
        dataset = ray.data.from_items([asdict(s) for s in pending], override_num_blocks=len(pending))
        columns = {"id_column": job.id_column, "text_column": job.text_column}
        written = (
            dataset.map(_read_shard, fn_kwargs=columns, num_cpus=_LIGHT_TASK_CPUS)
            .map(_ShardEmbedder, fn_constructor_kwargs={"job": job}, concurrency=actors, num_cpus=actor_cpus)
            .map(
                _write_shard,
                fn_kwargs={"folder": str(folder), "model": name, "version": job.version},
                num_cpus=_LIGHT_TASK_CPUS,
            )
        )
        for done in written.iter_rows():
            report.rows += done["rows"]
            report.tokens += done["tokens"]
    report.seconds = time.monotonic() - started
    _finish(folder, manifest, shards, report)
    return report, len(pending)


def _finish(folder: Path, manifest: dict[str, Any], shards: list[Shard], report: RunReport) -> None:
    """List every part in the manifest: the folder now reads like the in-process reembed's."""
    parts = [{"files": [s.part], "rows": s.stop - s.start} for s in shards]
    dimensions = pq.read_schema(folder / shards[0].part).field("vector").type.list_size if shards else 0
    manifest |= {
        "parts": parts,
        "rows": sum(p["rows"] for p in parts),
        "dimensions": dimensions,
        "tokens": manifest["tokens"] + report.tokens,
        "seconds": manifest["seconds"] + report.seconds,
    }
    write_atomically(folder / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))
