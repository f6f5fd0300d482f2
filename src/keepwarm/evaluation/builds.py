"""How much retrieval a reduced-precision build loses, measured once, while it is built.

Cosine agreement says how close an int8 graph's vectors are to fp32's; this says whether
the difference moves search results. The fp32 graph and the new build each retrieve on a
small fixed sample of the built-in docs set (exact search), and the build records both
nDCG@10 and the paired change with its noise, beside its cosines (docs/evaluation.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keepwarm.datasets.builtin import builtin_set
from keepwarm.evaluation.embedders import RuntimeEmbedder
from keepwarm.evaluation.metrics import paired_change
from keepwarm.evaluation.runner import dense_quality

if TYPE_CHECKING:
    from keepwarm.engine.tokenization import ModelTokenizer
    from keepwarm.runtimes.base import Runtime

# small enough to add seconds, not minutes, to a build that happens once per model version
BUILD_SET, BUILD_QUERIES, BUILD_DOCUMENTS = "docs", 100, 300


def retrieval_loss(tokenizer: ModelTokenizer, reference: Runtime, candidate: Runtime) -> dict[str, Any]:
    """nDCG@10 of `reference` and `candidate` on the build sample, and the candidate's change."""
    dataset = builtin_set(BUILD_SET, BUILD_QUERIES, BUILD_DOCUMENTS)
    before, after = (
        dense_quality(RuntimeEmbedder(tokenizer, runtime), dataset)["ndcg@10"]
        for runtime in (reference, candidate)
    )
    change, noise = paired_change(before, after)
    return {
        "dataset": dataset.description,
        "reference_ndcg@10": round(float(before.mean()), 4),
        "ndcg@10": round(float(after.mean()), 4),
        "ndcg@10_change": round(change, 4),
        "noise_2se": round(noise, 4),
    }
