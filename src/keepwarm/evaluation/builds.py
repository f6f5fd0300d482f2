"""How much retrieval a reduced-precision build loses, measured once, while it is built.

Cosine agreement says how close an int8 graph's vectors are to fp32's; this says whether
the difference moves search results. The reference and the candidate each retrieve on a
small fixed sample of the built-in docs set (exact search), and the build records both
nDCG@10, the paired change with its noise, and the candidate's recall@10 of the
reference's top 10, beside its cosines (docs/evaluation.md). The same measurement serves
both kinds of build: an int8 graph against the fp32 one (`runtime_loss`), and a model
version's compressed output dtypes against its float vectors, when their calibration is
built (`compressed_loss`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from keepwarm.datasets.builtin import builtin_set
from keepwarm.evaluation.compressed import overlap
from keepwarm.evaluation.embedders import Embedded, Embedder, Kind, RuntimeEmbedder, Target, TargetInfo
from keepwarm.evaluation.metrics import paired_change, per_query, ranking
from keepwarm.evaluation.runner import dense_retrieval
from keepwarm.outputs.compress import COMPRESSED_DTYPES, quantize

if TYPE_CHECKING:
    from keepwarm.datasets.retrieval import RetrievalSet
    from keepwarm.engine.calibration import EmbedTexts
    from keepwarm.engine.tokenization import ModelTokenizer
    from keepwarm.evaluation.metrics import Run
    from keepwarm.runtimes.base import Runtime

# small enough to add seconds, not minutes, to a build that happens once per model version
BUILD_SET, BUILD_QUERIES, BUILD_DOCUMENTS = "docs", 100, 300


def runtime_loss(tokenizer: ModelTokenizer, reference: Runtime, candidate: Runtime) -> dict[str, Any]:
    """What an int8 graph loses against the fp32 one on the build sample."""
    dataset = _build_sample()
    before, after = (_run(RuntimeEmbedder(tokenizer, runtime), dataset) for runtime in (reference, candidate))
    return retrieval_loss(before, after, dataset)


def compressed_loss(name: str, embed: EmbedTexts, ranges: np.ndarray) -> dict[str, dict[str, Any]]:
    """What each compressed output dtype loses against the float vectors, searched as its dtype is.

    The sample is embedded once; each dtype quantizes those vectors with `ranges`.
    """
    dataset = _build_sample()
    remembered = _Remembered(name, embed)
    reference = _run(remembered, dataset)
    return {
        dtype: retrieval_loss(reference, _run(_Quantized(remembered, dtype, ranges), dataset), dataset)
        for dtype in COMPRESSED_DTYPES
    }


def retrieval_loss(reference: Run, candidate: Run, dataset: RetrievalSet) -> dict[str, Any]:
    """nDCG@10 of both runs, the candidate's paired change, and its recall@10 of the reference's top 10."""
    before, after = (per_query(run, dataset.qrels)["ndcg@10"] for run in (reference, candidate))
    change, noise = paired_change(before, after)
    tops = [[ranking(run.get(query, {}), 10) for query in dataset.queries] for run in (reference, candidate)]
    return {
        "dataset": dataset.description,
        "reference_ndcg@10": round(float(before.mean()), 4),
        "ndcg@10": round(float(after.mean()), 4),
        "ndcg@10_change": round(change, 4),
        "noise_2se": round(noise, 4),
        "recall@10_vs_reference": round(overlap(*tops), 4),
    }


def _build_sample() -> RetrievalSet:
    return builtin_set(BUILD_SET, BUILD_QUERIES, BUILD_DOCUMENTS)


def _run(embedder: Embedder, dataset: RetrievalSet) -> Run:
    return dense_retrieval(embedder, dataset).run


class _Remembered:
    """A model version's float vectors through `embed`, each request's answer kept for the next dtype."""

    def __init__(self, name: str, embed: EmbedTexts) -> None:
        self.target, self._embed = Target(name), embed
        self._answers: dict[tuple[Kind, tuple[str, ...]], np.ndarray] = {}
        self._lock = threading.Lock()

    def info(self) -> TargetInfo:
        return TargetInfo("calibrating", "?", "?", self.embed(["?"], "query").vectors.shape[1])

    def embed(self, texts: list[str], kind: Kind) -> Embedded:
        key = (kind, tuple(texts))
        with self._lock:
            known = self._answers.get(key)
        if known is None:
            known = self._embed(texts, kind)
            with self._lock:
                self._answers[key] = known
        return Embedded(known, 0)


class _Quantized:
    """Another embedder's float vectors in a compressed dtype, with a version's calibrated ranges."""

    def __init__(self, inner: Embedder, dtype: str, ranges: np.ndarray) -> None:
        self.target = Target(inner.target.model, dtype=dtype)
        self._inner, self._ranges = inner, ranges

    def info(self) -> TargetInfo:
        return self._inner.info()

    def embed(self, texts: list[str], kind: Kind) -> Embedded:
        embedded = self._inner.embed(texts, kind)
        return Embedded(
            quantize(embedded.vectors, self.target.dtype or "float", self._ranges), embedded.tokens
        )
