"""Reranking and classifying: a scoring model's request path, on the same pipeline as embeddings.

A rerank is one job of (query, document) pairs: tokenized as pairs (engine/pairs.py),
cached by version and pair token ids, and queued item by item, so the scheduler cuts a
1,000-document request into many model calls by its token budget and length grouping,
online work first, exactly as it does embedding inputs. The model's rows come back as
logits; here they become scores: a document split into windows keeps its best window's.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from keepwarm.engine.model import ServedModel
from keepwarm.engine.pairs import PairOptions, probabilities, relevance
from keepwarm.engine.pipeline import Pipeline, Rows, check_task, overflow_policy
from keepwarm.engine.tokenization import Tokenized
from keepwarm.engine.types import Admission, Classifications, EngineSettings, ScoreOptions, Scores
from keepwarm.errors import InvalidRequest

ClassifyInput = str | tuple[str, str]  # a text, or a pair read through the model's pair template


class Scorer:
    """Reranks and classifies with loaded models through the shared pipeline."""

    def __init__(self, pipeline: Pipeline, settings: EngineSettings) -> None:
        self._pipeline = pipeline
        self._settings = settings

    async def rerank(
        self,
        served: ServedModel,
        query: str,
        documents: Sequence[str],
        options: ScoreOptions,
        admit: Admission | None,
    ) -> Scores:
        """Score every document against `query`; cancelling it drops the request's queued pairs."""
        tokenize = self._pair_tokenizer(served, query, documents, options)
        size = len(query) * len(documents) + sum(len(d) for d in documents)
        rows = await self._pipeline.rows(served, tokenize, size, options.priority, admit)
        return _scores(served, rows, len(documents))

    def rerank_sync(
        self,
        served: ServedModel,
        query: str,
        documents: Sequence[str],
        options: ScoreOptions,
        admit: Admission | None,
    ) -> Scores:
        """Blocking `rerank`, for scripts, benchmarks and worker threads."""
        tokenize = self._pair_tokenizer(served, query, documents, options)
        rows = self._pipeline.rows_sync(served, tokenize, options.priority, admit)
        return _scores(served, rows, len(documents))

    async def classify(
        self,
        served: ServedModel,
        inputs: Sequence[ClassifyInput],
        options: ScoreOptions,
        admit: Admission | None,
    ) -> Classifications:
        """Every label's probability for each input."""
        tokenize = self._text_tokenizer(served, inputs, options)
        size = sum(len(x) if isinstance(x, str) else len(x[0]) + len(x[1]) for x in inputs)
        rows = await self._pipeline.rows(served, tokenize, size, options.priority, admit)
        return _classifications(served, rows)

    def classify_sync(
        self,
        served: ServedModel,
        inputs: Sequence[ClassifyInput],
        options: ScoreOptions,
        admit: Admission | None,
    ) -> Classifications:
        """Blocking `classify`."""
        tokenize = self._text_tokenizer(served, inputs, options)
        return _classifications(served, self._pipeline.rows_sync(served, tokenize, options.priority, admit))

    def _pair_tokenizer(
        self, served: ServedModel, query: str, documents: Sequence[str], options: ScoreOptions
    ):  # noqa: ANN202 - a Callable[[], Tokenized]
        check_task(served, "rerank")
        if not query:
            raise InvalidRequest("query must not be empty", param="query")
        if not documents:
            raise InvalidRequest("documents must not be empty", param="documents")
        pair_options = PairOptions(
            overflow=overflow_policy(served, options.truncate),
            from_start=options.truncate_start,
            max_document_tokens=options.max_document_tokens,
        )
        assert served.pairs is not None  # every reranker has one (engine/model.py)
        return partial(
            served.pairs.encode, query, documents, pair_options, max_chars=self._settings.max_input_chars
        )

    def _text_tokenizer(self, served: ServedModel, inputs: Sequence[ClassifyInput], options: ScoreOptions):  # noqa: ANN202
        check_task(served, "classify")
        if not inputs:
            raise InvalidRequest("input must not be empty", param="input")
        overflow = overflow_policy(served, options.truncate, options.truncate_start)
        return partial(_encode_inputs, served, list(inputs), overflow, self._settings.max_input_chars)


def _encode_inputs(
    served: ServedModel, inputs: list[ClassifyInput], overflow: str, max_chars: int | None
) -> Tokenized:
    """Texts through the model's tokenizer and (text, text) pairs through its pair template, in order.

    A pair model's texts carry zero segment ids, so that a model call may mix them with pairs.
    """
    texts = [(i, x) for i, x in enumerate(inputs) if isinstance(x, str)]
    pairs = [(i, x) for i, x in enumerate(inputs) if not isinstance(x, str)]
    rows: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    if texts:
        single = served.tokenizer.encode([x for _, x in texts], overflow=overflow, max_chars=max_chars)
        for (index, _), ids in zip(texts, single.ids, strict=True):
            rows[index] = ids, np.zeros_like(ids) if served.spec.pairs else None
    if pairs:
        assert served.pairs is not None  # every classifier has one (engine/model.py)
        options = PairOptions(
            overflow=overflow.removesuffix("_start"), from_start=overflow.endswith("_start")
        )
        paired = served.pairs.encode_pairs(
            [x for _, x in pairs], options, max_chars=max_chars, param="inputs"
        )
        types = paired.type_ids or [None] * len(paired.ids)
        for (index, _), ids, type_ids in zip(pairs, paired.ids, types, strict=True):
            rows[index] = ids, type_ids
    ordered = [rows[i] for i in range(len(inputs))]
    type_ids = [t for _, t in ordered]
    return Tokenized([ids for ids, _ in ordered], None, None if type_ids[0] is None else type_ids)  # type: ignore[arg-type]


def _scores(served: ServedModel, rows: Rows, documents: int) -> Scores:
    raw, scores = relevance(served.spec, rows.values)
    owners = rows.tokenized.owners
    if owners is not None:  # chunked documents: each keeps its best window
        best_raw = np.full(documents, -np.inf)
        best = np.full(documents, -np.inf)
        np.maximum.at(best_raw, owners, raw)
        np.maximum.at(best, owners, scores)
        raw, scores = best_raw, best
    return Scores(
        raw, scores, rows.tokenized.tokens, served.info, rows.cached_inputs, rows.cached_tokens, rows.timings
    )


def _classifications(served: ServedModel, rows: Rows) -> Classifications:
    logits = rows.values  # one window per input: a classifier's overflow is never "chunk" (catalog/spec.py)
    return Classifications(
        probabilities(served.spec, logits),
        logits.astype(np.float64),
        served.spec.labels,
        rows.tokenized.tokens,
        served.info,
        rows.cached_inputs,
        rows.cached_tokens,
        rows.timings,
    )
