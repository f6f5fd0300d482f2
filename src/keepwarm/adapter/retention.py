"""How much retrieval quality an adapter keeps, measured on held-out texts.

Each held-out document gets a query made from a span of its own words, so the
relevant document is known without labels. Recall@10 (is the source document among
the top 10?) is measured for four set-ups against the **old** index: old-model
queries (the baseline), new-model queries as they are (the drift), and adapted
new-model queries; plus new-model queries against a new index (where the re-index
ends up). Retention is adapted recall over the baseline. `overlap_at_10` compares
result lists instead: the share of the old-model query's top 10 that the adapted
query also returns. The mean cosines say how close the versions' vectors of the same
held-out documents are, before and after adapting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from keepwarm.adapter.linear import LinearAdapter
from keepwarm.runtimes.accuracy import cosine_stats

_QUERY_WORDS = 12
_MIN_WORDS = 24
K = 10


@dataclass(frozen=True)
class RetrievalSet:
    """Documents and, for each, a query taken from its middle."""

    documents: list[str]
    queries: list[str]


def retrieval_set(texts: list[str]) -> RetrievalSet:
    """Keep texts long enough to cut a query from; the query is a span of 12 words from the middle."""
    documents, queries = [], []
    for text in texts:
        words = text.split()
        if len(words) >= _MIN_WORDS:
            start = (len(words) - _QUERY_WORDS) // 2
            documents.append(text)
            queries.append(" ".join(words[start : start + _QUERY_WORDS]))
    return RetrievalSet(documents, queries)


def split(texts: list[str], fit_count: int, heldout_count: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Disjoint, deterministic samples for fitting and for evaluation."""
    shuffled = list(dict.fromkeys(texts))
    random.Random(seed).shuffle(shuffled)
    return shuffled[:fit_count], shuffled[fit_count : fit_count + heldout_count]


def _top_k(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    scores = queries @ documents.T
    return np.argsort(-scores, axis=1)[:, :K]


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine between paired rows: how close two versions' vectors of the same texts are."""
    return cosine_stats(a, b)["mean_cosine"]


def _recall(top: np.ndarray) -> float:
    return float(np.mean([row in found for row, found in enumerate(top)]))


def measure(
    adapter: LinearAdapter,
    old_docs: np.ndarray,
    old_queries: np.ndarray,
    new_docs: np.ndarray,
    new_queries: np.ndarray,
) -> dict[str, float | None]:
    """Recall@10 of each set-up, the adapter's retention, and its top-10 overlap with the old model."""
    adapted = adapter.adapt(new_queries)
    baseline = _top_k(old_queries, old_docs)
    adapted_top = _top_k(adapted, old_docs)
    old_recall = _recall(baseline)
    recall_adapted = _recall(adapted_top)
    comparable = new_queries.shape[1] == old_docs.shape[1]  # unadapted new queries need the same dimensions
    return {
        "mean_cosine_new_to_old": round(_mean_cosine(new_docs, old_docs), 4) if comparable else None,
        "mean_cosine_adapted_to_old": round(_mean_cosine(adapter.adapt(new_docs), old_docs), 4),
        "queries": len(old_queries),
        "recall_at_10_old_queries_old_index": round(old_recall, 4),
        "recall_at_10_new_queries_old_index": round(_recall(_top_k(new_queries, old_docs)), 4)
        if comparable
        else None,
        "recall_at_10_adapted_queries_old_index": round(recall_adapted, 4),
        "recall_at_10_new_queries_new_index": round(_recall(_top_k(new_queries, new_docs)), 4),
        "retention": round(recall_adapted / old_recall, 4) if old_recall else 0.0,
        "overlap_at_10": round(
            float(np.mean([len(set(a) & set(b)) / K for a, b in zip(adapted_top, baseline, strict=True)])), 4
        ),
    }
