"""Evaluate pipelines on datasets: quality, speed and cost of each, measured in the same run."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from keepwarm.cost import Pricing
from keepwarm.datasets.builtin import BUILTIN, builtin_set
from keepwarm.datasets.retrieval import DatasetError, RetrievalSet, load_beir, load_pairs
from keepwarm.evaluation.embedders import Embedder
from keepwarm.evaluation.metrics import evaluate, per_query
from keepwarm.evaluation.pipelines import Context, Dense, Pipeline, Retrieval

Progress = Callable[[str], None]
_CHUNK = 64  # queries per request when only their quality is measured


def open_dataset(
    spec: str, *, corpus: Path | None = None, split: str = "test", queries: int | None, documents: int | None
) -> RetrievalSet:
    """A built-in set (capped at `queries` and `documents`), a BEIR folder, or a pairs file with `corpus`."""
    if spec in BUILTIN:
        return builtin_set(spec, queries, documents)
    path = Path(spec)
    if path.is_dir():
        return load_beir(path, split)
    if path.is_file():
        if corpus is None:
            raise DatasetError(
                f"{path} is a pairs file: give its documents with --corpus FILE (BEIR corpus.jsonl format)"
            )
        return load_pairs(path, corpus)
    raise DatasetError(f"{spec!r} is neither a built-in set ({', '.join(BUILTIN)}) nor a folder or file")


def run_evaluation(
    datasets: list[RetrievalSet],
    pipelines: list[Pipeline],
    pricing: Pricing,
    scratch: Path | None = None,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """One result row per (dataset, pipeline), in that order; vectors go to `scratch` (default: temp)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="keepwarm-eval-", dir=scratch) as folder:
        for dataset in datasets:
            context = Context(dataset, Path(folder))
            for pipeline in pipelines:
                if progress:
                    progress(f"{dataset.name}: {pipeline.kind} {pipeline.name}")
                rows.append(result_row(dataset, pipeline, context.retrieval(pipeline), pricing))
    return rows


def dense_quality(
    embedder: Embedder, dataset: RetrievalSet, scratch: Path | None = None
) -> dict[str, np.ndarray]:
    """Each metric per query of one embedder's dense retrieval on `dataset` (for comparing versions)."""
    return per_query(dense_retrieval(embedder, dataset, scratch).run, dataset.qrels)


def dense_retrieval(embedder: Embedder, dataset: RetrievalSet, scratch: Path | None = None) -> Retrieval:
    """One embedder's dense retrieval on `dataset`, queries batched (only its quality is wanted)."""
    with tempfile.TemporaryDirectory(prefix="keepwarm-eval-", dir=scratch) as folder:
        return Context(dataset, Path(folder)).retrieval(Dense(embedder, query_batch=_CHUNK))


def result_row(
    dataset: RetrievalSet, pipeline: Pipeline, retrieval: Retrieval, pricing: Pricing
) -> dict[str, Any]:
    """Quality, speed and cost of one pipeline on one dataset, as reported."""
    indexing, querying, model = retrieval.indexing, retrieval.querying, retrieval.model
    cost = (
        pricing.cost(1_000_000, 1_000_000 / indexing.tokens_per_second)
        if indexing.tokens_per_second
        else None
    )
    return {
        "dataset": dataset.name,
        "pipeline": pipeline.kind,
        "model": pipeline.name,
        "version": model.version if model else None,
        "dtype": model.dtype if model else None,
        "runtime": model.runtime if model else None,
        "dimensions": model.dimensions if model else None,
        **{metric: round(value, 4) for metric, value in evaluate(retrieval.run, dataset.qrels).items()},
        "queries": len(dataset.qrels),
        "documents": len(dataset.documents),
        "docs_per_s": round(indexing.texts_per_second, 1),
        "tokens_per_s": round(indexing.tokens_per_second, 1) if indexing.tokens else None,
        "query_p50_ms": _ms(querying.percentile_ms(50)),
        "query_p95_ms": _ms(querying.percentile_ms(95)),
        "usd_per_million_tokens": round(cost, 6) if cost is not None else None,
        "cached_inputs": retrieval.cached,
    }


def dataset_summary(dataset: RetrievalSet) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "description": dataset.description,
        "queries": len(dataset.qrels),
        "documents": len(dataset.documents),
    }


def _ms(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None
