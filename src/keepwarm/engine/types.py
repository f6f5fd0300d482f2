"""The values that cross the engine's boundary: settings, per-request options, answers, model descriptions.

Callers (the HTTP layer, batch jobs, re-embedding, benchmarks) import these and nothing
else from inside the engine. `ModelInfo` is how a loaded model version is named to them:
a small frozen description, so no caller holds (or reaches into) the loaded model, its
queue or its runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keepwarm.catalog import ModelSpec
from keepwarm.catalog.versions import short_version, version_label
from keepwarm.engine.scheduler import CallLimitSettings
from keepwarm.engine.work import ONLINE

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
    dimensions: int | None = None
    prompt_name: str | None = None
    priority: int = ONLINE
    expect_version: str | None = None  # the version the caller's index was built with (409 if not current)


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
    max_padding_tokens: int
    created: int  # the model files' time (OpenAI's `created`)
    accuracy: Mapping[str, Any] = field(default_factory=dict)  # measured against the reference at export

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


@dataclass(frozen=True)
class ModelView:
    """One configured model version as callers see it; `loaded` is None until it is loaded."""

    spec: ModelSpec
    version: str
    current: bool
    loaded: ModelInfo | None
