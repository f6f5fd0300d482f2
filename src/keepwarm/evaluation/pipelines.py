"""Retrieval pipelines: what turns a query into a ranked list of documents, and what it costs.

A pipeline is named in the report and measured as it would run in production: how fast
it indexes the corpus (documents per second; for a dense model, embedding it) and how
long each query takes, one query at a time. Pipelines can build on each other's
results through the `Context`, which runs each pipeline once per dataset:

- `Dense`: one served model (and `dimensions`, output `dtype`); exact search over its vectors.
- `Sparse` (sparse.py): a learned sparse model's vectors; exact sparse dot-product search.
- `MultiVector` (multivector.py): a model's token vectors; exact MaxSim (late interaction).
- `BM25`: the lexical baseline (`bm25s`, Lucene's BM25 variant, English stop words).
- `Hybrid`: reciprocal-rank fusion of two pipelines' runs (Cormack et al., k = 60).
- `Rerank`: another pipeline's top `depth` documents of each query, rescored by a
  reranker (a cross-encoder or decoder reranker served like any model); a query's
  latency is the first stage's plus the rerank call's.

The runner, report and plot take any pipeline.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np

from keepwarm.bench.stats import Measurement
from keepwarm.datasets.retrieval import RetrievalSet
from keepwarm.evaluation.compressed import searchable, searchable_width
from keepwarm.evaluation.embedders import Embedded, Embedder, Reranker, Scored, TargetInfo
from keepwarm.evaluation.metrics import DEPTH, Run, ranking
from keepwarm.evaluation.search import VectorFile, exact_search
from keepwarm.runtimes.pooling import l2_normalize

RRF_K = 60
_CHUNK = 64  # documents per embedding request
_CONCURRENT = 4  # requests in flight while embedding the corpus, so the model never waits for the caller


@dataclass
class Retrieval:
    """A pipeline's run on one dataset, with what indexing and querying took."""

    run: Run
    indexing: Measurement  # texts = documents indexed, tokens = model tokens embedded
    querying: Measurement  # one latency per query
    cached: int = 0  # inputs a cache answered instead of the model (their speed is not the model's)
    model: TargetInfo | None = None


class Pipeline(Protocol):
    """Retrieves the top documents of every query of a dataset."""

    kind: str  # dense | sparse | multivector | bm25 | hybrid | rerank
    name: str  # what it runs: a model, "bm25", or what it fuses
    label: str  # unique within one evaluation

    def retrieve(self, context: Context) -> Retrieval: ...


@dataclass
class Context:
    """One dataset being evaluated: a scratch folder, and every pipeline's retrieval once done."""

    dataset: RetrievalSet
    scratch: Path
    done: dict[str, Retrieval] = field(default_factory=dict)

    def retrieval(self, pipeline: Pipeline) -> Retrieval:
        if pipeline.label not in self.done:
            self.done[pipeline.label] = pipeline.retrieve(self)
        return self.done[pipeline.label]


class TargetPipeline:
    """What every pipeline of one embedding target shares: its embedder, how queries are sent, its label.

    Queries go one per request, as a searching user sends them, so their latency is a
    user's; `query_batch` > 1 sends them in batches when only quality matters.
    """

    kind: str

    def __init__(self, embedder: Embedder, query_batch: int = 1) -> None:
        self.embedder, self.query_batch = embedder, query_batch
        self.name = embedder.target.label

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


class Dense(TargetPipeline):
    """Embed the corpus and the queries with one target; rank by cosine similarity, exactly.

    A target with a compressed `dtype` is ranked as a vector database ranks that dtype
    (evaluation/compressed.py: integer dot product, or Hamming distance for bits), on the
    values the model's server answers.
    """

    kind = "dense"

    def __init__(self, embedder: Embedder, query_batch: int = 1) -> None:
        super().__init__(embedder, query_batch)
        dtype = embedder.target.dtype
        self._searchable = l2_normalize if dtype is None else partial(searchable, dtype=dtype)

    def retrieve(self, context: Context) -> Retrieval:
        info = self.embedder.info()
        doc_ids, texts = list(context.dataset.documents), list(context.dataset.documents.values())
        dtype = self.embedder.target.dtype
        width = info.dimensions if dtype is None else searchable_width(dtype, info.dimensions)
        stored = np.float32 if dtype is None else np.float64  # integer dot products stay exact
        with tempfile.TemporaryDirectory(dir=context.scratch) as folder:
            vectors = VectorFile(Path(folder) / "corpus.npy", len(texts), width, stored)
            try:
                indexing, cached = embed_corpus(self.embedder, texts, self._store(vectors))
                query_ids = list(context.dataset.queries)
                querying, embedded = embed_queries(
                    self.embedder, list(context.dataset.queries.values()), self.query_batch
                )
                queries = (
                    self._searchable(np.concatenate([e.vectors for e in embedded]))
                    if embedded
                    else np.empty((0, width), np.float32)
                )
                found, scores = exact_search(queries, vectors.blocks(), DEPTH)
            finally:
                vectors.close()
        run = {
            query: {doc_ids[doc]: float(score) for doc, score in zip(row, row_scores, strict=True)}
            for query, row, row_scores in zip(query_ids, found, scores, strict=True)
        }
        return Retrieval(run, indexing, querying, cached, info)

    def _store(self, vectors: VectorFile) -> Callable[[int, Embedded], None]:
        return lambda start, embedded: vectors.write(start, self._searchable(embedded.vectors))


def embed_corpus(
    embedder: Embedder, texts: list[str], store: Callable[[int, Embedded], None]
) -> tuple[Measurement, int]:
    """Embed documents in chunks, several in flight, each `store`d (at its first row) as it arrives.

    Returns what indexing took and how many inputs a cache answered.
    """

    def embed(start: int) -> tuple[Embedded, float]:
        began = time.perf_counter()
        embedded = embedder.embed(texts[start : start + _CHUNK], "document")
        store(start, embedded)
        return embedded, time.perf_counter() - began

    measured, cached = Measurement(), 0
    with measured.timed(), ThreadPoolExecutor(_CONCURRENT) as pool:
        for embedded, latency in pool.map(embed, range(0, len(texts), _CHUNK)):
            measured.add(embedded.inputs, embedded.tokens, latency)
            cached += embedded.cached
    return measured, cached


def embed_queries(embedder: Embedder, queries: list[str], batch: int) -> tuple[Measurement, list[Embedded]]:
    """Requests of `batch` queries, one after another, each one's latency recorded."""
    measured, answers = Measurement(), []
    with measured.timed():
        for start in range(0, len(queries), batch):
            began = time.perf_counter()
            embedded = embedder.embed(queries[start : start + batch], "query")
            measured.add(embedded.inputs, embedded.tokens, time.perf_counter() - began)
            answers.append(embedded)
    return measured, answers


class BM25:
    """Lexical ranking with bm25s: lower-cased word tokens, English stop words removed."""

    kind = "bm25"
    name = "bm25"
    label = "bm25"

    def retrieve(self, context: Context) -> Retrieval:
        import bm25s

        doc_ids, texts = list(context.dataset.documents), list(context.dataset.documents.values())
        indexing, index = Measurement(), bm25s.BM25()
        with indexing.timed():
            index.index(_words(texts), show_progress=False)
        indexing.texts = len(texts)
        querying, run = Measurement(), {}
        with querying.timed():
            for query_id, query in context.dataset.queries.items():
                began = time.perf_counter()
                found, scores = index.retrieve(_words([query]), k=min(DEPTH, len(texts)), show_progress=False)
                run[query_id] = {
                    doc_ids[d]: float(s) for d, s in zip(found[0], scores[0], strict=True) if s > 0
                }
                querying.add(1, 0, time.perf_counter() - began)
        return Retrieval(run, indexing, querying)


def _words(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


class Hybrid:
    """Reciprocal-rank fusion of two pipelines: each document scores Σ 1 / (k + its rank)."""

    kind = "hybrid"

    def __init__(self, first: Pipeline, second: Pipeline, k: int = RRF_K) -> None:
        self.first, self.second, self.k = first, second, k
        self.name = f"{first.name} + {second.name}"

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.first.label}+{self.second.label}"

    def retrieve(self, context: Context) -> Retrieval:
        a, b = context.retrieval(self.first), context.retrieval(self.second)
        querying, run = Measurement(), {}
        for n, query in enumerate(context.dataset.queries):
            began = time.perf_counter()
            run[query] = reciprocal_rank_fusion([a.run.get(query, {}), b.run.get(query, {})], self.k)
            fused = time.perf_counter() - began
            querying.add(1, 0, a.querying.latencies[n] + b.querying.latencies[n] + fused)
        querying.seconds = sum(querying.latencies)
        indexing = Measurement(
            texts=a.indexing.texts,
            tokens=a.indexing.tokens + b.indexing.tokens,
            seconds=a.indexing.seconds + b.indexing.seconds,
        )
        return Retrieval(run, indexing, querying, a.cached + b.cached, a.model or b.model)


class Rerank:
    """Rescore the first stage's top `depth` documents of each query with a reranker, one query at a time."""

    kind = "rerank"

    def __init__(self, first: Pipeline, reranker: Reranker, depth: int = DEPTH) -> None:
        self.first, self.reranker, self.depth = first, reranker, depth
        self.name = f"{first.name} → {reranker.model} (top {depth})"

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.first.label}>{self.reranker.model}@{self.depth}"

    def retrieve(self, context: Context) -> Retrieval:
        first, documents = context.retrieval(self.first), context.dataset.documents
        querying, run = Measurement(), {}
        for n, query_id in enumerate(context.dataset.queries):
            candidates = ranking(first.run.get(query_id, {}), self.depth)
            began = time.perf_counter()
            scored = (
                self.reranker.score(context.dataset.queries[query_id], [documents[d] for d in candidates])
                if candidates
                else Scored(np.empty(0, np.float32), 0)
            )
            latency = time.perf_counter() - began
            run[query_id] = {doc: float(score) for doc, score in zip(candidates, scored.scores, strict=True)}
            querying.add(1, scored.tokens, first.querying.latencies[n] + latency)
        querying.seconds = sum(querying.latencies)
        return Retrieval(run, first.indexing, querying, first.cached, first.model)


def reciprocal_rank_fusion(runs: list[dict[str, float]], k: int = RRF_K) -> dict[str, float]:
    """One query's fused scores: Σ over the runs that rank a document of 1 / (k + rank), rank from 1."""
    fused: dict[str, float] = {}
    for scores in runs:
        for rank, doc in enumerate(ranking(scores), start=1):
            fused[doc] = fused.get(doc, 0.0) + 1 / (k + rank)
    return fused
