"""Reading a corpus to re-embed: JSONL, CSV or Parquet files with an id and a text column.

Rows stream in chunks, so a corpus far larger than memory can be embedded, and a
resumed run skips the rows an earlier run already finished.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from keepwarm.errors import ConfigError

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Corpus:
    """A corpus file and the names of its id and text columns."""

    path: Path
    id_column: str = "id"
    text_column: str = "text"

    @property
    def format(self) -> str:
        try:
            return FORMATS[self.path.suffix.lower()]
        except KeyError:
            raise ConfigError(
                f"{self.path}: unknown corpus format; use one of {', '.join(FORMATS)}"
            ) from None

    def count(self) -> int:
        """Number of rows (for progress and ETA)."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        return sum(1 for _ in self._records([self.text_column]))

    def chunks(self, size: int, skip: int = 0) -> Iterator[list[tuple[str, str]]]:
        """(id, text) pairs in chunks of `size`, after the first `skip` rows."""
        rows = itertools.islice(self._rows(), skip, None)
        while chunk := list(itertools.islice(rows, size)):
            yield chunk

    def texts(self) -> Iterator[str]:
        """Just the texts (no id needed): samples for fitting and evaluating adapters."""
        for number, record in enumerate(self._records([self.text_column]), start=1):
            text = record.get(self.text_column)
            if not isinstance(text, str):
                raise ConfigError(f"{self.path}: row {number} needs a string '{self.text_column}'")
            if text.strip():
                yield text

    def _rows(self) -> Iterator[tuple[str, str]]:
        for number, record in enumerate(self._records([self.id_column, self.text_column]), start=1):
            identifier, text = record.get(self.id_column), record.get(self.text_column)
            if identifier is None or not isinstance(text, str):
                raise ConfigError(
                    f"{self.path}: row {number} needs an '{self.id_column}' and a string '{self.text_column}'"
                )
            if not text.strip():
                raise ConfigError(f"{self.path}: row {number} (id {identifier}) has an empty text")
            yield str(identifier), text

    def _records(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        if self.format == "jsonl":
            with self.path.open("rb") as handle:
                yield from (orjson.loads(line) for line in handle if line.strip())
        elif self.format == "csv":
            with self.path.open(newline="", encoding="utf-8") as handle:
                yield from csv.DictReader(handle)
        else:
            import pyarrow.parquet as pq

            table = pq.ParquetFile(self.path)
            missing = set(columns) - set(table.schema_arrow.names)
            if missing:
                raise ConfigError(
                    f"{self.path}: no column(s) {sorted(missing)}; it has {table.schema_arrow.names}"
                )
            for batch in table.iter_batches(columns=columns):
                yield from batch.to_pylist()
