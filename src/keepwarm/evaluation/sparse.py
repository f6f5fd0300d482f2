"""Learned sparse retrieval (SPLADE, bge-m3's sparse head): exact sparse dot products over the corpus.

The corpus's sparse vectors (vocabulary ids and weights, as the model's server answers
them) are the index, held as compressed sparse rows in blocks of `BLOCK_ROWS`
documents: memory grows with their non-zero entries, as a sparse index's does. Each
block is scored against the queries in slices by the shared exact search (search.py),
so the dense score matrix in memory never exceeds a slice by a block. A document that
shares no vocabulary id with the query scores 0 and is not retrieved, as a sparse
vector index answers only matching documents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse

from keepwarm.evaluation.embedders import Embedded
from keepwarm.evaluation.metrics import DEPTH
from keepwarm.evaluation.pipelines import Context, Retrieval, TargetPipeline, embed_corpus, embed_queries
from keepwarm.evaluation.search import BLOCK_ROWS, exact_search

if TYPE_CHECKING:
    from keepwarm.outputs.sparse import SparseVector


class Sparse(TargetPipeline):
    """Embed the corpus and the queries into a model's sparse vectors; rank by their dot product, exactly."""

    kind = "sparse"

    def retrieve(self, context: Context) -> Retrieval:
        info = self.embedder.info()
        doc_ids, texts = list(context.dataset.documents), list(context.dataset.documents.values())
        documents: list[SparseVector | None] = [None] * len(texts)

        def store(start: int, embedded: Embedded) -> None:
            documents[start : start + embedded.inputs] = _vectors(embedded)

        indexing, cached = embed_corpus(self.embedder, texts, store)
        query_ids = list(context.dataset.queries)
        querying, embedded = embed_queries(
            self.embedder, list(context.dataset.queries.values()), self.query_batch
        )
        queries = [vector for answer in embedded for vector in _vectors(answer)]
        found, scores = sparse_search(queries, documents, DEPTH)  # type: ignore[arg-type] - all stored
        run = {
            query: {doc_ids[d]: float(s) for d, s in zip(row, row_scores, strict=True) if s > 0}
            for query, row, row_scores in zip(query_ids, found, scores, strict=True)
        }
        return Retrieval(run, indexing, querying, cached, info)


def sparse_search(
    queries: list[SparseVector], documents: list[SparseVector], k: int, rows: int = BLOCK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """The k highest sparse dot products of each query over `documents`: (indices, scores), best first."""
    width = 1 + max((int(v.indices.max()) for v in (*queries, *documents) if len(v.indices)), default=0)
    blocks = (csr_rows(documents[start : start + rows], width) for start in range(0, len(documents), rows))
    return exact_search(csr_rows(queries, width), blocks, k, score=_sparse_dot)


def csr_rows(vectors: list[SparseVector], width: int) -> scipy.sparse.csr_matrix:
    """Sparse vectors as the rows of a [len(vectors), width] float32 matrix."""
    indptr = np.cumsum([0, *(len(v.indices) for v in vectors)])
    indices = np.concatenate([v.indices for v in vectors]) if vectors else np.empty(0, np.int64)
    values = np.concatenate([v.values for v in vectors]) if vectors else np.empty(0, np.float32)
    return scipy.sparse.csr_matrix((values.astype(np.float32), indices, indptr), shape=(len(vectors), width))


def _sparse_dot(queries: Any, block: Any) -> np.ndarray:
    return (queries @ block.T).toarray()


def _vectors(embedded: Embedded) -> list[SparseVector]:
    if embedded.sparse is None:
        raise ValueError("the model answered no sparse vectors")
    return embedded.sparse
