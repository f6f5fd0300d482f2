"""The engine: embeds inputs with the served models, in-process, for any caller.

The HTTP API is one caller; benchmarks and batch jobs are others. `embed` (asyncio)
and `embed_sync` (threads) share one path: tokenize, queue as a job, wait for the
worker to fill it, then cut to the requested dimensions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keepwarm.catalog import ArtifactStore, DigestCache, ModelSpec
from keepwarm.engine.jobs import ONLINE, Job, WorkItem
from keepwarm.engine.model import ServedModel, load_model
from keepwarm.engine.scheduler import BatchLimits
from keepwarm.errors import InvalidRequest, ModelNotFound, NotReady
from keepwarm.metrics import Metrics
from keepwarm.runtimes.pooling import l2_normalize

log = logging.getLogger(__name__)

Inputs = Sequence[str] | Sequence[Sequence[int]]

# Requests up to this many characters (or token ids) are tokenized on the event loop:
# that takes tens of microseconds, less than the hand-off to a thread and back (measured
# ~0.2 ms for one short text). Larger requests go to the tokenizer threads, so the event
# loop keeps answering other requests meanwhile.
_INLINE_TOKENIZE_SIZE = 2048


@dataclass(frozen=True)
class EngineSettings:
    """Limits that apply to every model the engine serves."""

    batch: BatchLimits = BatchLimits()
    max_request_tokens: int = 300_000
    tokenizer_threads: int = 2


@dataclass(frozen=True)
class Embeddings:
    """The answer to one embed call: vectors in input order and the tokens they cost."""

    vectors: np.ndarray
    tokens: int
    model: ServedModel


class Engine:
    """Serves one or more models; load them with `load()` before embedding."""

    def __init__(
        self,
        specs: list[ModelSpec],
        data_dir: Path,
        settings: EngineSettings | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.specs = specs
        self.settings = settings or EngineSettings()
        self.data_dir = data_dir
        self.metrics = metrics or Metrics()
        self._models: dict[str, ServedModel] = {}
        self._names = {alias: spec.name for spec in specs for alias in spec.names}
        self._tokenize_pool = ThreadPoolExecutor(self.settings.tokenizer_threads, "keepwarm-tokenize")
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once every configured model is loaded and warmed up."""
        return self._ready

    @property
    def models(self) -> list[ServedModel]:
        return list(self._models.values())

    def load(self) -> None:
        """Load every model (exporting artifacts the first time). Blocking."""
        store = ArtifactStore(self.data_dir)
        digests = DigestCache(self.data_dir / "digests.json")
        for spec in self.specs:
            if spec.name not in self._models:
                self._models[spec.name] = load_model(spec, store, digests, self.settings.batch, self.metrics)
        self._ready = True

    def close(self) -> None:
        """Stop every model's worker, failing queued work with a retryable error."""
        self._ready = False
        for model in self._models.values():
            model.close()
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)

    def resolve(self, name: str) -> ServedModel:
        """The served model for a name or alias: ModelNotFound, or NotReady while loading."""
        canonical = self._names.get(name)
        if canonical is None:
            raise ModelNotFound(name, list(self._names))
        model = self._models.get(canonical)
        if model is None:
            raise NotReady(f"model '{name}' is still loading", retry_after=2)
        return model

    async def embed(
        self,
        model: str,
        inputs: Inputs,
        *,
        truncate: bool = False,
        dimensions: int | None = None,
        priority: int = ONLINE,
    ) -> Embeddings:
        """Embed `inputs` (texts, or token-id lists) with `model`; cancel-safe."""
        served = self.resolve(model)
        _check_dimensions(served, dimensions)
        if _size(inputs) <= _INLINE_TOKENIZE_SIZE:
            ids = _tokenize(served, inputs, truncate)
        else:
            ids = await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, _tokenize, served, inputs, truncate)
        job = self._submit(served, ids, priority)
        try:
            vectors = await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            served.scheduler.discard_finished()
            raise
        return self._finish(served, vectors, ids, dimensions)

    def embed_sync(
        self,
        model: str,
        inputs: Inputs,
        *,
        truncate: bool = False,
        dimensions: int | None = None,
        priority: int = ONLINE,
    ) -> Embeddings:
        """Blocking version of `embed`, for scripts, benchmarks and worker threads."""
        served = self.resolve(model)
        _check_dimensions(served, dimensions)
        ids = _tokenize(served, inputs, truncate)
        job = self._submit(served, ids, priority)
        return self._finish(served, job.future.result(), ids, dimensions)

    def _submit(self, served: ServedModel, ids: list[np.ndarray], priority: int) -> Job:
        tokens = sum(len(i) for i in ids)
        if tokens > self.settings.max_request_tokens:
            raise InvalidRequest(
                f"This request has {tokens} tokens; the maximum per request is "
                f"{self.settings.max_request_tokens}. Split it into smaller requests.",
                param="input",
                code="max_tokens_per_request",
            )
        job = Job(len(ids), served.dimensions, priority=priority)
        served.scheduler.submit([WorkItem(ids=i, job=job, index=n) for n, i in enumerate(ids)])
        return job

    @staticmethod
    def _finish(
        served: ServedModel, vectors: np.ndarray, ids: list[np.ndarray], dimensions: int | None
    ) -> Embeddings:
        if dimensions is not None and dimensions != served.dimensions:
            vectors = l2_normalize(vectors[:, :dimensions])
        return Embeddings(vectors=vectors, tokens=sum(len(i) for i in ids), model=served)


def _size(inputs: Inputs) -> int:
    return sum(len(item) for item in inputs)


def _tokenize(served: ServedModel, inputs: Inputs, truncate: bool) -> list[np.ndarray]:
    if not inputs:
        raise InvalidRequest("input must not be empty", param="input")
    if isinstance(inputs[0], str):
        return served.tokenizer.encode_texts(list(inputs), truncate=truncate)  # type: ignore[arg-type]
    return served.tokenizer.encode_token_ids([list(i) for i in inputs], truncate=truncate)  # type: ignore[arg-type]


def _check_dimensions(served: ServedModel, dimensions: int | None) -> None:
    if dimensions is not None and not 1 <= dimensions <= served.dimensions:
        raise InvalidRequest(
            f"dimensions must be between 1 and {served.dimensions} for model '{served.spec.name}', "
            f"got {dimensions}",
            param="dimensions",
        )
