"""Retrieval quality of a run against relevance judgments: nDCG@10, recall@10/@100, MRR@10.

The definitions are trec_eval's (and so pytrec_eval's and BEIR's), so the figures can
be compared with published ones:

- a run ranks each query's documents by score, highest first; documents with equal
  scores are ranked by document id, *descending* (trec_eval's tie rule, kept so that
  the same run file gives the same numbers here and there);
- a judgment is relevant when its grade is at least 1; nDCG's gain is the grade itself
  (graded qrels), its discount log2(rank + 1), normalised by the best possible ranking
  of that query's judged documents;
- recall@k is the share of a query's relevant documents in its top k; MRR@10 is
  1 / the rank of the first relevant document in the top 10, 0 if there is none;
- every query with at least one relevant document is averaged, and a query the run
  does not answer counts as 0 (trec_eval `-c`); queries without any are left out.
"""

from __future__ import annotations

import heapq

import numpy as np

from keepwarm.datasets.retrieval import Qrels

Run = dict[str, dict[str, float]]  # query id -> document id -> score

METRICS: tuple[str, ...] = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
DEPTH = 100  # the deepest rank any metric looks at


def ranking(scores: dict[str, float], depth: int = DEPTH) -> list[str]:
    """The `depth` best documents of one query, best first, ties by document id descending."""
    return [doc for doc, _ in heapq.nlargest(depth, scores.items(), key=lambda item: (item[1], item[0]))]


def per_query(run: Run, qrels: Qrels) -> dict[str, np.ndarray]:
    """Each metric for every judged query with a relevant document, in qrels order."""
    judged = [query for query, grades in qrels.items() if any(grade > 0 for grade in grades.values())]
    gains = np.zeros((len(judged), DEPTH))
    ideal = np.zeros((len(judged), DEPTH))
    relevant = np.zeros(len(judged))
    for row, query in enumerate(judged):
        grades = qrels[query]
        ranked = ranking(run.get(query, {}))
        gains[row, : len(ranked)] = [max(grades.get(doc, 0), 0) for doc in ranked]
        best = sorted((grade for grade in grades.values() if grade > 0), reverse=True)[:DEPTH]
        ideal[row, : len(best)] = best
        relevant[row] = sum(1 for grade in grades.values() if grade > 0)
    hits = gains > 0
    discount = 1 / np.log2(np.arange(2, DEPTH + 2))
    first_hit = np.where(hits[:, :10].any(axis=1), hits[:, :10].argmax(axis=1) + 1, np.inf)
    return {
        "ndcg@10": (gains[:, :10] @ discount[:10]) / (ideal[:, :10] @ discount[:10]),
        "recall@10": hits[:, :10].sum(axis=1) / relevant,
        "recall@100": hits.sum(axis=1) / relevant,
        "mrr@10": 1 / first_hit,
    }


def evaluate(run: Run, qrels: Qrels) -> dict[str, float]:
    """The mean of each metric over the judged queries (see the module docs)."""
    scores = per_query(run, qrels)
    return {metric: float(values.mean()) if len(values) else 0.0 for metric, values in scores.items()}


def paired_change(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """SECOND's mean gain over FIRST on the same queries, and twice its standard error.

    Paired (each query is scored by both), so a gain within twice the error is noise.
    """
    change = second - first
    error = float(np.std(change, ddof=1) / np.sqrt(len(change))) if len(change) > 1 else 0.0
    return float(np.mean(change)), 2 * error
