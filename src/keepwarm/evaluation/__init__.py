"""Retrieval evaluation: which served model, version, dtype or size retrieves best, how fast, at what cost.

- `metrics`: nDCG@10, recall@10/@100, MRR@10 with trec_eval's definitions;
- `search`: exact search over vectors kept on disk (memory bounded by corpus size);
- `embedders`: a served model in-process (the Engine) or behind a running server;
- `pipelines`: dense, bm25, hybrid (reciprocal-rank fusion) and rerank retrieval, measured;
- `sparse`: learned sparse retrieval; `multivector`: MaxSim over token vectors;
- `compressed`: how compressed dtypes are searched; `builds`: what a build loses, measured as it is built;
- `runner`: datasets × pipelines → result rows; `report`: the table and the plot.
"""

from keepwarm.evaluation.embedders import (
    Embedder,
    EngineEmbedder,
    EngineReranker,
    Reranker,
    ServerEmbedder,
    ServerReranker,
    Target,
    TargetInfo,
)
from keepwarm.evaluation.metrics import METRICS, Qrels, Run, evaluate, paired_change, per_query
from keepwarm.evaluation.multivector import MultiVector, maxsim
from keepwarm.evaluation.pipelines import (
    BM25,
    Context,
    Dense,
    Hybrid,
    Pipeline,
    Rerank,
    Retrieval,
    reciprocal_rank_fusion,
)
from keepwarm.evaluation.report import plot, results_table
from keepwarm.evaluation.runner import (
    dataset_summary,
    dense_quality,
    open_dataset,
    result_row,
    run_evaluation,
)
from keepwarm.evaluation.search import VectorFile, array_blocks, exact_search
from keepwarm.evaluation.sparse import Sparse, sparse_search

__all__ = [
    "BM25",
    "METRICS",
    "Context",
    "Dense",
    "Embedder",
    "EngineEmbedder",
    "EngineReranker",
    "Hybrid",
    "MultiVector",
    "TargetInfo",
    "Pipeline",
    "Rerank",
    "Reranker",
    "Qrels",
    "Retrieval",
    "Run",
    "ServerEmbedder",
    "ServerReranker",
    "Sparse",
    "Target",
    "VectorFile",
    "array_blocks",
    "dataset_summary",
    "dense_quality",
    "evaluate",
    "maxsim",
    "exact_search",
    "open_dataset",
    "paired_change",
    "per_query",
    "plot",
    "reciprocal_rank_fusion",
    "result_row",
    "results_table",
    "run_evaluation",
    "sparse_search",
]
