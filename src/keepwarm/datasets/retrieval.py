"""Retrieval test sets: documents, queries and relevance judgments, from a team's own files.

Two layouts are read:

- **BEIR** (a folder): `corpus.jsonl` with `_id`, `text` and an optional `title` per line,
  `queries.jsonl` with `_id` and `text`, and `qrels/<split>.tsv` with the header
  `query-id  corpus-id  score` and one graded judgment per line. As BEIR does, a
  document's text is its title and text joined by a space.
- **pairs** (two files): a JSONL of `{"query": ..., "positive": <document id>}` lines
  (`positive` may also be a list of ids; lines with the same query text are one query
  with all their positives), for a team's own search logs, and a corpus file in BEIR's
  `corpus.jsonl` format.

Only queries with at least one relevant document (grade ≥ 1) are kept: a query nothing
can answer says nothing about a model. Anything malformed is a `DatasetError` that
names the file and line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

Qrels = dict[str, dict[str, int]]  # query id -> document id -> relevance grade


class DatasetError(ValueError):
    """A retrieval set's files are missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class RetrievalSet:
    """Documents and queries by id, and which documents are relevant to which query."""

    name: str
    documents: dict[str, str]
    queries: dict[str, str]
    qrels: Qrels
    description: str = ""


def load_beir(folder: Path, split: str = "test") -> RetrievalSet:
    """A BEIR-layout folder; `split` names the qrels file (`qrels/<split>.tsv`)."""
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(path.stem for path in (folder / "qrels").glob("*.tsv"))
        raise DatasetError(f"{qrels_path} does not exist; splits in {folder}: {', '.join(splits) or 'none'}")
    documents = load_documents(folder / "corpus.jsonl")
    queries = {
        str(_field(row, "_id", path, n)): _text(row, "text", path, n)
        for row, path, n in _jsonl(folder / "queries.jsonl")
    }
    qrels = _read_qrels(qrels_path)
    _check_ids(qrels, queries, documents, qrels_path)
    qrels = {query: grades for query, grades in qrels.items() if any(grade > 0 for grade in grades.values())}
    if not qrels:
        raise DatasetError(f"{qrels_path}: no query has a relevant document (score ≥ 1)")
    queries = {query: queries[query] for query in qrels}
    return RetrievalSet(folder.name, documents, queries, qrels, f"BEIR folder {folder} (split {split})")


def load_pairs(pairs: Path, corpus: Path) -> RetrievalSet:
    """(query, positive document id) lines and the corpus they point into."""
    documents = load_documents(corpus)
    ids: dict[str, str] = {}  # query text -> its id
    qrels: Qrels = {}
    for row, path, number in _jsonl(pairs):
        query = _text(row, "query", path, number)
        positives = _field(row, "positive", path, number)
        positives = positives if isinstance(positives, list) else [positives]
        for positive in positives:
            if not isinstance(positive, str | int) or str(positive) not in documents:
                raise DatasetError(f"{path}:{number}: positive {positive!r} is not a document id in {corpus}")
            qrels.setdefault(ids.setdefault(query, f"q{len(ids) + 1}"), {})[str(positive)] = 1
    queries = {query_id: text for text, query_id in ids.items()}
    return RetrievalSet(pairs.stem, documents, queries, qrels, f"pairs {pairs} over corpus {corpus}")


def load_documents(path: Path) -> dict[str, str]:
    """A BEIR `corpus.jsonl`: document id -> title and text joined by a space."""
    documents: dict[str, str] = {}
    for row, _, number in _jsonl(path):
        doc_id = str(_field(row, "_id", path, number))
        title, text = row.get("title") or "", row.get("text") or ""
        if not isinstance(title, str) or not isinstance(text, str) or not (title or text).strip():
            raise DatasetError(f"{path}:{number}: needs a non-empty string 'text' (and optionally 'title')")
        if doc_id in documents:
            raise DatasetError(f"{path}:{number}: document id {doc_id!r} appears twice")
        documents[doc_id] = f"{title} {text}".strip()
    return documents


def _jsonl(path: Path) -> Iterator[tuple[dict[str, Any], Path, int]]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    found = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: not a JSON object")
        found = True
        yield row, path, number
    if not found:
        raise DatasetError(f"{path}: no lines")


def _field(row: dict[str, Any], key: str, path: Path, number: int) -> Any:
    if row.get(key) in (None, "", []):
        raise DatasetError(f"{path}:{number}: missing field '{key}'")
    return row[key]


def _text(row: dict[str, Any], key: str, path: Path, number: int) -> str:
    value = _field(row, key, path, number)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{path}:{number}: field '{key}' must be a non-empty string")
    return value


def _read_qrels(path: Path) -> Qrels:
    qrels: Qrels = {}
    with path.open(newline="", encoding="utf-8") as file:
        rows = csv.reader(file, delimiter="\t")
        header = next(rows, None)
        if header is None or [cell.strip() for cell in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise DatasetError(
                f"{path}:1: the first line must be the header 'query-id<TAB>corpus-id<TAB>score'"
            )
        for number, row in enumerate(rows, start=2):
            if not row:
                continue
            try:
                query, doc, score = row[0], row[1], int(row[2])
            except (IndexError, ValueError):
                raise DatasetError(
                    f"{path}:{number}: expected query-id, corpus-id and an integer score"
                ) from None
            qrels.setdefault(query, {})[doc] = score
    if not qrels:
        raise DatasetError(f"{path}: no judgments")
    return qrels


def _check_ids(qrels: Qrels, queries: dict[str, str], documents: dict[str, str], path: Path) -> None:
    for query, grades in qrels.items():
        if query not in queries:
            raise DatasetError(f"{path}: query-id {query!r} is not in queries.jsonl")
        unknown = next((doc for doc in grades if doc not in documents), None)
        if unknown is not None:
            raise DatasetError(f"{path}: corpus-id {unknown!r} (query {query!r}) is not in corpus.jsonl")
