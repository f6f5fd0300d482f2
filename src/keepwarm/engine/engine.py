"""The engine: embeds inputs with the served models, in-process, for any caller.

The HTTP API is one caller; benchmarks, batch jobs and re-embedding are others. `Engine`
is a facade over three parts, each in its own module: the version registry (what a name
means, loading, reloads: engine/registry.py), the request path (tokenize, cache, queue,
assemble: engine/pipeline.py) and the per-model queues and workers they feed
(engine/scheduler.py, engine/worker.py). Each configured model version has its own queue
and worker thread, so a burst on a slow model never queues behind, or in front of, a
fast one.

    with Engine(specs, data_dir) as engine:         # loads every eager model; closes at the end
        vectors = engine.embed_sync("all-minilm-l6-v2", ["hello"]).vectors

Without `with`, call `load()` yourself (the server does, on a thread of its own, while
it already answers /health) or not at all: then every model loads on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from keepwarm.catalog import ArtifactStore, ModelSpec
from keepwarm.engine.cache import EmbeddingCache
from keepwarm.engine.calibration import Calibrations
from keepwarm.engine.model import Loader, ServedModel, load_model
from keepwarm.engine.pipeline import Pipeline
from keepwarm.engine.registry import Registry
from keepwarm.engine.scoring import ClassifyInput, Scorer
from keepwarm.engine.tokenization import Token
from keepwarm.engine.types import (
    Admission,
    Authorization,
    Classifications,
    Embeddings,
    EmbedOptions,
    EngineSettings,
    Inputs,
    ModelInfo,
    ModelView,
    ScoreOptions,
    Scores,
)
from keepwarm.metrics import Metrics

_DEFAULT_OPTIONS = EmbedOptions()
_DEFAULT_SCORE_OPTIONS = ScoreOptions()


class Engine:
    """Serves model versions in this process (see the module docs).

    `loader` builds a started model from its spec; the default exports, opens, warms up
    and measures the real model. Tests pass one that wraps a runtime of their own.
    """

    def __init__(
        self,
        specs: list[ModelSpec],
        data_dir: Path,
        settings: EngineSettings | None = None,
        metrics: Metrics | None = None,
        *,
        loader: Loader = load_model,
    ) -> None:
        self.settings = settings or EngineSettings()
        self.data_dir = data_dir
        self.metrics = metrics or Metrics()
        self._registry = Registry(specs, data_dir, self.settings.calls, self.metrics, loader)
        cache_at = self.settings.cache_database or data_dir / "cache.sqlite"
        self._cache = (
            EmbeddingCache(self.settings.cache_bytes, cache_at if self.settings.persistent_cache else None)
            if self.settings.cache_bytes
            else None
        )
        self._calibrations = Calibrations(ArtifactStore(data_dir))
        self._pipeline = Pipeline(self.settings, self._cache, self.metrics, self._calibrations)
        self._scorer = Scorer(self._pipeline, self.settings)

    def __enter__(self) -> Engine:
        try:
            self.load()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @property
    def ready(self) -> bool:
        """True once every eagerly loaded model is loaded and warmed up."""
        return self._registry.ready

    @property
    def specs(self) -> list[ModelSpec]:
        return self._registry.specs

    @property
    def models(self) -> list[ServedModel]:
        """The model versions loaded right now."""
        return self._registry.models

    def catalog(self) -> list[ModelView]:
        """Every configured model version, marking the current one of each name."""
        return [self._with_calibration(view) for view in self._registry.catalog()]

    def describe(self, model: str) -> tuple[ModelView, list[ModelView]]:
        """The version `model` (a name, alias or pin) resolves to, and all versions of that name."""
        view, versions = self._registry.describe(model)
        return self._with_calibration(view), [self._with_calibration(v) for v in versions]

    def _with_calibration(self, view: ModelView) -> ModelView:
        """The view with what its compressed dtypes lose in search, when their calibration is built."""
        recorded = self._calibrations.retrieval(view.spec.name, view.version)
        return dataclasses.replace(view, compressed_retrieval=recorded) if recorded else view

    def resolve(self, model: str) -> ServedModel:
        """The loaded model for a name, alias or pin: ModelNotFound, or NotReady if not loaded."""
        return self._registry.resolve(model)

    def load(self) -> None:
        """Load every eager model version (exporting artifacts the first time); blocking.

        Without `load()`, every model loads on first use (handy for scripts); with it,
        requests for an eager model that is still loading get a retryable 503.
        """
        self._registry.load()

    def reconfigure(self, specs: list[ModelSpec]) -> None:
        """Serve `specs` from now on without dropping a request (engine/registry.py)."""
        self._registry.reconfigure(specs)

    def close(self) -> None:
        """Stop every model's worker, failing queued work with a retryable error."""
        self._registry.close()
        self._pipeline.close()
        if self._cache is not None:
            self._cache.close()

    async def embed(
        self,
        model: str,
        inputs: Inputs,
        options: EmbedOptions = _DEFAULT_OPTIONS,
        *,
        admit: Admission | None = None,
        authorize: Authorization | None = None,
    ) -> Embeddings:
        """Embed `inputs` (texts, or token-id lists) with `model`; cancel-safe.

        `model` is resolved once: `authorize`, if given, sees the spec of the very version
        that then serves the request and may refuse it by raising (the HTTP layer's model
        permissions). `admit`, if given, sees the request's token count before anything is
        queued and may refuse it by raising (the HTTP layer's tokens-per-minute limit).
        """
        async with self._serving(model, options.expect_version, authorize) as served:
            return await self._pipeline.run(served, inputs, options, admit)

    def embed_sync(
        self,
        model: str,
        inputs: Inputs,
        options: EmbedOptions = _DEFAULT_OPTIONS,
        *,
        admit: Admission | None = None,
        authorize: Authorization | None = None,
    ) -> Embeddings:
        """Blocking version of `embed`, for scripts, benchmarks and worker threads."""
        with self._serving_sync(model, options.expect_version, authorize) as served:
            return self._pipeline.run_sync(served, inputs, options, admit)

    async def rerank(
        self,
        model: str,
        query: str,
        documents: Sequence[str],
        options: ScoreOptions = _DEFAULT_SCORE_OPTIONS,
        *,
        admit: Admission | None = None,
        authorize: Authorization | None = None,
    ) -> Scores:
        """Score each of `documents` against `query` with reranker `model` (resolved as in `embed`)."""
        async with self._serving(model, options.expect_version, authorize) as served:
            return await self._scorer.rerank(served, query, documents, options, admit)

    def rerank_sync(
        self,
        model: str,
        query: str,
        documents: Sequence[str],
        options: ScoreOptions = _DEFAULT_SCORE_OPTIONS,
        *,
        admit: Admission | None = None,
        authorize: Authorization | None = None,
    ) -> Scores:
        """Blocking version of `rerank`."""
        with self._serving_sync(model, options.expect_version, authorize) as served:
            return self._scorer.rerank_sync(served, query, documents, options, admit)

    async def classify(
        self,
        model: str,
        inputs: Sequence[ClassifyInput],
        options: ScoreOptions = _DEFAULT_SCORE_OPTIONS,
        *,
        admit: Admission | None = None,
        authorize: Authorization | None = None,
    ) -> Classifications:
        """Every label's probability for each of `inputs` with classifier `model`."""
        async with self._serving(model, options.expect_version, authorize) as served:
            return await self._scorer.classify(served, inputs, options, admit)

    def classify_sync(
        self,
        model: str,
        inputs: Sequence[ClassifyInput],
        options: ScoreOptions = _DEFAULT_SCORE_OPTIONS,
        *,
        admit: Admission | None = None,
        authorize: Authorization | None = None,
    ) -> Classifications:
        """Blocking version of `classify`."""
        with self._serving_sync(model, options.expect_version, authorize) as served:
            return self._scorer.classify_sync(served, inputs, options, admit)

    async def tokenize(
        self,
        model: str,
        texts: list[str],
        *,
        add_special_tokens: bool = True,
        authorize: Authorization | None = None,
    ) -> tuple[ModelInfo, list[list[Token]]]:
        """Each text's tokens as `model` reads it, and the version that read them (no model call)."""
        async with self._serving(model, None, authorize) as served:
            return served.info, served.tokenizer.tokens(texts, add_special_tokens=add_special_tokens)

    async def decode(
        self,
        model: str,
        ids: list[list[int]],
        *,
        skip_special_tokens: bool = True,
        authorize: Authorization | None = None,
    ) -> tuple[ModelInfo, list[str]]:
        """Token ids in `model`'s vocabulary back to text, and the version whose vocabulary it is."""
        async with self._serving(model, None, authorize) as served:
            return served.info, served.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    @contextlib.asynccontextmanager
    async def _serving(
        self, model: str, expect_version: str | None, authorize: Authorization | None
    ) -> AsyncIterator[ServedModel]:
        """The loaded version `model` resolves to (checked, loaded if need be), held while in use."""
        with self._registry.acquire(model, expect_version=expect_version, authorize=authorize) as loading:
            yield loading.result() if loading.done() else await asyncio.wrap_future(loading)

    @contextlib.contextmanager
    def _serving_sync(
        self, model: str, expect_version: str | None, authorize: Authorization | None
    ) -> Iterator[ServedModel]:
        """Blocking `_serving`."""
        with self._registry.acquire(model, expect_version=expect_version, authorize=authorize) as loading:
            yield loading.result()
