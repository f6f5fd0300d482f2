"""Multi-vector (late-interaction, ColBERT) retrieval: exact MaxSim over every document's token vectors.

A query scores a document by the sum, over the query's token vectors, of the best dot
product with any of the document's token vectors (ColBERT's MaxSim; bge-m3's
`colbert_score` before its division by the query's length, which does not change a
query's ranking). The corpus's token matrices are written to the scratch folder as they
arrive, one file per request of documents, and read back one file at a time, so memory
holds one request's tokens, not the corpus's; each file is scored against the queries
by the shared exact search (search.py), a few queries at a time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keepwarm.evaluation.embedders import Embedded
from keepwarm.evaluation.metrics import DEPTH
from keepwarm.evaluation.pipelines import Context, Retrieval, TargetPipeline, embed_corpus, embed_queries
from keepwarm.evaluation.search import exact_search

_QUERIES_AT_ONCE = 16  # queries whose token scores against one file are in memory at once


@dataclass(frozen=True)
class TokenRows:
    """Texts' token matrices stacked: `tokens` [all tokens, dim], `counts` tokens per text."""

    tokens: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, matrices: list[np.ndarray]) -> TokenRows:
        if any(len(m) == 0 for m in matrices):
            raise ValueError("a text has no token vectors to search")
        dim = matrices[0].shape[1] if matrices else 0
        tokens = np.concatenate(matrices) if matrices else np.empty((0, dim), np.float32)
        return cls(tokens.astype(np.float32, copy=False), np.array([len(m) for m in matrices], np.int64))

    @property
    def shape(self) -> tuple[int]:
        return (len(self.counts),)

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.counts) - self.counts

    def __getitem__(self, rows: slice) -> TokenRows:
        starts = self.starts
        first, last = rows.indices(len(self.counts))[:2]
        begin = int(starts[first]) if first < len(starts) else len(self.tokens)
        end = int(starts[last]) if last < len(starts) else len(self.tokens)
        return TokenRows(self.tokens[begin:end], self.counts[first:last])


def maxsim(queries: TokenRows, documents: TokenRows) -> np.ndarray:
    """Each query's MaxSim score of each document: [queries, documents]."""
    scores = np.empty((queries.shape[0], documents.shape[0]), np.float32)
    if not documents.shape[0]:
        return scores
    for first in range(0, queries.shape[0], _QUERIES_AT_ONCE):
        part = queries[first : first + _QUERIES_AT_ONCE]
        similarities = part.tokens @ documents.tokens.T  # [query tokens, document tokens]
        best = np.maximum.reduceat(similarities, documents.starts, axis=1)  # [query tokens, documents]
        scores[first : first + part.shape[0]] = np.add.reduceat(best, part.starts, axis=0)
    return scores


class MultiVector(TargetPipeline):
    """Embed the corpus and the queries into token vectors; rank by MaxSim, exactly."""

    kind = "multivector"

    def retrieve(self, context: Context) -> Retrieval:
        info = self.embedder.info()
        doc_ids, texts = list(context.dataset.documents), list(context.dataset.documents.values())
        with tempfile.TemporaryDirectory(dir=context.scratch) as name:
            folder = Path(name)

            def store(start: int, embedded: Embedded) -> None:
                rows = TokenRows.of(_matrices(embedded))
                np.save(folder / f"{start:012d}.tokens.npy", rows.tokens)
                np.save(folder / f"{start:012d}.counts.npy", rows.counts)

            indexing, cached = embed_corpus(self.embedder, texts, store)
            querying, embedded = embed_queries(
                self.embedder, list(context.dataset.queries.values()), self.query_batch
            )
            queries = TokenRows.of([m for answer in embedded for m in _matrices(answer)])
            found, scores = exact_search(queries, _stored(folder), DEPTH, score=maxsim)
        run = {
            query: {doc_ids[d]: float(s) for d, s in zip(row, row_scores, strict=True)}
            for query, row, row_scores in zip(context.dataset.queries, found, scores, strict=True)
        }
        return Retrieval(run, indexing, querying, cached, info)


def _stored(folder: Path) -> Iterator[TokenRows]:
    """The corpus's token files in document order (their names are their first document's index)."""
    for counts in sorted(folder.glob("*.counts.npy")):
        tokens = counts.with_name(counts.name.replace(".counts.", ".tokens."))
        yield TokenRows(np.load(tokens), np.load(counts))


def _matrices(embedded: Embedded) -> list[np.ndarray]:
    if embedded.multivectors is None:
        raise ValueError("the model answered no token vectors")
    return embedded.multivectors
