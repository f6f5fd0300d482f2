"""The values that cross the engine's boundary: settings, per-request options, answers, model descriptions.

Callers (the HTTP layer, batch jobs, re-embedding, benchmarks) import these and nothing
else from inside the engine. `ModelInfo` is how a loaded model version is named to them:
a small frozen description, so no caller holds (or reaches into) the loaded model, its
queue or its runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from keepwarm.catalog import ModelSpec
from keepwarm.catalog.versions import short_version, version_label
from keepwarm.engine.scheduler import CallLimitSettings
from keepwarm.engine.work import ONLINE
from keepwarm.outputs.compress import quantize
from keepwarm.outputs.sparse import SparseVector

Inputs = Sequence[str] | Sequence[Sequence[int]]
# Called with a request's token count after tokenization, before it is queued; raises to refuse it.
Admission = Callable[[int], None]
# Called with the spec of the exact version a request resolved to, before anything else; raises to refuse it.
Authorization = Callable[[ModelSpec], None]


@dataclass(frozen=True)
class EngineSettings:
    """Limits that apply to every model the engine serves."""

    calls: CallLimitSettings = CallLimitSettings()
    max_request_tokens: int = 300_000
    # longest input in characters, refused before it is tokenized (token-id inputs: ids)
    max_input_chars: int = 1_000_000
    tokenizer_threads: int = 2
    cache_bytes: int = 256 * 1024 * 1024  # in-memory embedding cache; 0 turns the cache off
    persistent_cache: bool = False  # also keep cached vectors in <data dir>/cache.sqlite
    cache_database: str | None = None  # ... or in this database (a URL) instead
    # online requests that waited longer than this before reaching the model are dropped
    queue_timeout: float | None = 60.0


@dataclass(frozen=True)
class EmbedOptions:
    """How to embed: what the caller may choose per request."""

    truncate: bool | None = None  # None: the model's overflow policy; True: truncate; False: refuse
    # with truncate None, a model whose policy is to refuse truncates instead: a dialect whose
    # API cuts when the request does not say (Cohere: END); a chunking model still chunks
    truncate_unless_configured: bool = False
    truncate_from: str = "end"  # where truncate=True cuts: "end" keeps the first tokens, "start" the last
    optional_prompt: bool = False  # a prompt_name the model lacks means no prompt (Cohere's input_type)
    dimensions: int | None = None
    # only the model's Matryoshka sizes and its own size, no arbitrary cut (Cohere's output_dimension)
    matryoshka_only: bool = False
    max_tokens: int | None = None  # a per-request limit below the model's own (Cohere's max_tokens)
    prompt_name: str | None = None
    priority: int = ONLINE
    expect_version: str | None = None  # the version the caller's index was built with (409 if not current)
    # compressed forms the caller will encode (outputs/compress.py); int8/uint8 bring calibrated ranges
    output_dtypes: tuple[str, ...] = ()
    # which of the model's outputs to answer (catalog/spec.py OUTPUT_KINDS), all from one model call
    outputs: tuple[str, ...] = ("dense",)
    sparse_top_k: int | None = None  # keep only the heaviest entries of each sparse vector
    normalize: bool = True  # False: a normalising model's pooled vectors before its Normalize module


@dataclass(frozen=True)
class Timings:
    """Where one request's time went, in seconds (see engine.work.Job for the moments)."""

    tokenization: float = 0.0  # tokenizing and looking the inputs up in the cache
    queue: float = 0.0
    inference: float = 0.0
    compute: float = 0.0  # this request's share of model time (per-hour pricing)


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model version as responses, usage records and metrics name it."""

    name: str
    version: str
    dimensions: int
    runtime: str
    dtype: str
    max_call_tokens: int
    max_call_rows: int
    max_padding_tokens: int
    created: int  # the model files' time (OpenAI's `created`)
    accuracy: Mapping[str, Any] = field(default_factory=dict)  # measured against the reference at export
    task: str = "embed"  # embed | rerank | classify (catalog/spec.py)
    token_multiple: int = 1  # call widths are padded up to a multiple of this (engine/tuning.py)

    @property
    def short_version(self) -> str:
        return short_version(self.version)

    @property
    def label(self) -> str:
        """`name@short-version`: how logs and metrics name this version."""
        return version_label(self.name, self.version)


@dataclass(frozen=True)
class Embeddings:
    """The answer to one embed call: vectors in input order, tokens embedded, cache savings."""

    vectors: np.ndarray
    tokens: int
    model: ModelInfo
    cached_inputs: int = 0
    cached_tokens: int = 0
    timings: Timings = Timings()
    ranges: np.ndarray | None = None  # (2, dim) calibrated [min; max], when int8/uint8 was asked for
    sparse: list[SparseVector] | None = None  # per input, when the sparse output was asked for
    multivectors: list[np.ndarray] | None = None  # per input [tokens, dim], when asked for

    def compressed(self, dtype: str) -> np.ndarray:
        """The vectors in `dtype` (outputs/compress.py), with this version's calibrated ranges."""
        return quantize(self.vectors, dtype, self.ranges)

    @property
    def inputs(self) -> int:
        return len(self.vectors)


@dataclass(frozen=True)
class ScoreOptions:
    """How to rerank or classify: what the caller may choose per request."""

    truncate: bool | None = None  # None: the model's overflow policy; True: truncate; False: refuse
    truncate_start: bool = False  # cut a long document's start instead of its end (TEI's "Left")
    max_document_tokens: int | None = None  # Cohere's max_tokens_per_doc
    priority: int = ONLINE
    expect_version: str | None = None  # the version the caller expects (409 if not current)


@dataclass(frozen=True)
class Scores:
    """A rerank's answer: per document, in input order, its raw score (logit) and its relevance score."""

    raw: np.ndarray
    scores: np.ndarray
    tokens: int  # pair tokens: query and template counted with every document
    model: ModelInfo
    cached_inputs: int = 0
    cached_tokens: int = 0
    timings: Timings = Timings()

    @property
    def inputs(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class Classifications:
    """A classify call's answer: per input, in order, every label's probability and the raw logits."""

    probabilities: np.ndarray  # [inputs, labels]
    logits: np.ndarray
    labels: tuple[str, ...]
    tokens: int
    model: ModelInfo
    cached_inputs: int = 0
    cached_tokens: int = 0
    timings: Timings = Timings()

    @property
    def inputs(self) -> int:
        return len(self.probabilities)


class Answer(Protocol):
    """What every task's answer tells metering, metrics and logs (Embeddings, Scores, Classifications)."""

    @property
    def tokens(self) -> int: ...
    @property
    def model(self) -> ModelInfo: ...
    @property
    def cached_inputs(self) -> int: ...
    @property
    def timings(self) -> Timings: ...
    @property
    def inputs(self) -> int: ...


@dataclass(frozen=True)
class ModelView:
    """One configured model version as callers see it; `loaded` is None until it is loaded."""

    spec: ModelSpec
    version: str
    current: bool
    loaded: ModelInfo | None
    # each compressed output dtype's measured retrieval loss, once its calibration is built
    compressed_retrieval: Mapping[str, Any] | None = None
